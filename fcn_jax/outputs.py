"""Result files: atomic JSON, metrics.jsonl plus TensorBoard events (no TensorFlow needed)."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from typing import Any


def write_atomic(path: str, data: bytes | str) -> None:
    """Write a file so that readers see the old or the new content, never a partial one."""
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
            with open(self.path) as f:
                records = [json.loads(line) for line in f if line.strip()]
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
        with open(self.path) as f:
            for line in f:
                record = json.loads(line)
                found = record if record["kind"] == kind else found
        return found

    def write(self, step: int, kind: str, values: dict[str, Any]) -> None:
        """One record; its scalars go to TensorBoard as ``KIND/KEY`` (``KIND/KEY/SIZE`` for
        records of one test size), flushed at once so a killed run keeps them."""
        if self._tb is None:  # not the writer
            return
        record = {"step": int(step), "kind": kind, **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
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


class _EventFile:
    """A TensorBoard event file written synchronously: tensorboardX's ``SummaryWriter`` hands
    events to a background thread, so its ``flush`` can return before they reach the file and
    a killed run would lose them."""

    def __init__(self, logdir: str, purge_step: int):
        # Imported late: tensorboardX is slow to import.
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        os.makedirs(logdir, exist_ok=True)
        # The name tensorboardX gives has whole seconds: a suffix keeps a quick resume's file apart.
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
        self._writer.write_event(event)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
