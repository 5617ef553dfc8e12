"""Result files: atomic JSON, metrics.jsonl plus TensorBoard events (no TensorFlow needed).
A write that fails (a full disk, a read-only one) is a one-line :class:`WriteError` naming the
file and the space left, and leaves no partial file or record behind."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
import time
from typing import Any

from absl import logging


class WriteError(OSError):
    """A result or checkpoint that could not be written: one line saying what, where and how
    much space is left there (entry points print it as their error)."""


def space_left(path: str) -> str:
    """``"1.2 MiB free"`` on the filesystem of ``path`` (its nearest existing ancestor)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        free = float(shutil.disk_usage(path).free)
    except OSError:
        return "free space unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            break
        free /= 1024
    return f"{free:.3g} {unit} free" if unit != "B" else f"{int(free)} B free"


def failure_reason(error: BaseException) -> str:
    """Why a write failed, in a few words: the OS's reason where one is in the chain of
    ``error`` or named in its text (tensorstore wraps it in a long message), else its first
    line."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    text = str(error).strip()
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        if os.strerror(code) in text:
            return os.strerror(code)
    return f"{type(error).__name__}: {text.splitlines()[0][:200] if text else ''}"


def write_failed(path: str, error: BaseException, what: str = "") -> WriteError:
    """The :class:`WriteError` of a failed write of ``path`` (``what``: e.g. "checkpoint")."""
    if isinstance(error, WriteError):
        return error
    target = f"{what} {path}" if what else path
    return WriteError(f"cannot write {target}: {failure_reason(error)} ({space_left(path)})")


def write_atomic(path: str, data: bytes | str) -> None:
    """Write a file so that readers see the old or the new content, never a partial one; a
    failure is a :class:`WriteError`."""
    try:
        _write_atomic(path, data)
    except OSError as e:
        raise write_failed(path, e) from e


def _write_atomic(path: str, data: bytes | str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what any new file of the user gets
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


class MetricsWriter:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors scalars to
    TensorBoard (tensorboardX). On resume, records after the restored step, and those of the
    ``rewritten`` kinds at it, are dropped so the file reads as one uninterrupted run. Only
    the ``writer`` (process 0 of a multi-host run) touches the files; the others read."""

    def __init__(
        self,
        workdir: str,
        resume_step: int = 0,
        rewritten: tuple[str, ...] = (),
        *,
        writer: bool = True,
    ):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not writer:
            return
        if not os.path.exists(self.path):
            write_atomic(self.path, "")
        else:
            records = _read_records(self.path)
            kept = [
                r
                for r in records
                if r["step"] < resume_step
                or (r["step"] == resume_step and r["kind"] not in rewritten)
            ]
            write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._tb = _EventFile(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1)

    def last(self, kind: str) -> dict[str, Any] | None:
        """The latest record of ``kind`` (e.g. the last train metrics before a resume)."""
        found = None
        if not os.path.exists(self.path):
            return None
        for record in _read_records(self.path):
            found = record if record["kind"] == kind else found
        return found

    def write(self, step: int, kind: str, values: dict[str, Any]) -> None:
        """One record; its scalars go to TensorBoard as ``KIND/KEY`` (``KIND/KEY/SIZE`` for
        records of one test size), flushed at once so a killed run keeps them."""
        if self._tb is None:  # not the writer
            return
        record = {"step": int(step), "kind": kind, **values}
        try:
            _append(self.path, (json.dumps(record) + "\n").encode())
        except OSError as e:
            raise write_failed(self.path, e) from e
        suffix = f"/{values['size']}" if "size" in values else ""
        scalars = {
            f"{kind}/{key}{suffix}": value
            for key, value in values.items()
            if isinstance(value, int | float) and math.isfinite(value)
        }
        self._tb.write(step, scalars)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _read_records(path: str) -> list[dict]:
    """The records of a metrics.jsonl; a last line cut short (a kill mid-write) is dropped."""
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                raise
            logging.warning("%s: dropped its last line, cut short: %.80s", path, line)
    return records


def _append(path: str, data: bytes) -> None:
    """Append ``data`` whole or not at all: a failed write is cut off again, so that no
    partial record is left for a resume to trip on."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError:  # the reader drops a last line cut short
                pass
            raise
    finally:
        os.close(fd)


class _EventFile:
    """A TensorBoard event file written synchronously: tensorboardX's ``SummaryWriter`` hands
    events to a background thread, so its ``flush`` can return before they reach the file and
    a killed run would lose them."""

    def __init__(self, logdir: str, purge_step: int):
        # Imported late: tensorboardX is slow to import.
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self._logdir = logdir
        with self._failing_as_write_error():
            os.makedirs(logdir, exist_ok=True)
            # tensorboardX's names have whole seconds: a suffix keeps a quick resume's apart.
            suffix = f".{time.time_ns()}"
            self._writer = EventsWriter(os.path.join(logdir, "events"), filename_suffix=suffix)
            # TensorBoard drops the earlier files' events from purge_step on (a resumed run).
            start = SessionLog(status=SessionLog.START)
            self._writer.write_event(Event(step=purge_step, session_log=start))
            self._writer.flush()

    def write(self, step: int, scalars: dict[str, float]) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=tag, simple_value=v) for tag, v in scalars.items()]
        event = Event(wall_time=time.time(), step=step, summary=Summary(value=values))
        with self._failing_as_write_error():
            self._writer.write_event(event)
            self._writer.flush()

    def close(self) -> None:
        with self._failing_as_write_error():
            self._writer.close()

    @contextlib.contextmanager
    def _failing_as_write_error(self):
        """An OS error as a :class:`WriteError`, the file closed at once: its buffer would
        otherwise fail again, in a message of its own, when the interpreter exits."""
        try:
            yield
        except OSError as e:
            writer = getattr(getattr(self, "_writer", None), "_py_recordio_writer", None)
            try:
                if writer is not None:
                    writer.close()
            except OSError:
                pass
            raise write_failed(self._logdir, e, "TensorBoard events in") from e
