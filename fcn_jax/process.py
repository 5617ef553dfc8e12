"""Process-wide JAX settings, made once per process by the entry point before any JAX call
(as scenic's and big_vision's ``main`` do): the distributed runtime and the persistent
compilation cache. What may differ between the runs of one process (the matmul precision, the
conv gradient) belongs to each compiled step instead (:class:`fcn_jax.steps.CompiledStep`).

``Cluster`` holds the explicit cluster flags; without them ``--distributed`` lets JAX detect
the cluster (Slurm, Open MPI, Cloud TPU).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
import typing

import jax
from absl import logging

from fcn_jax.config import TrainConfig
from fcn_jax.logs import prefix_lines


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The processes of a multi-host run, for ``jax.distributed.initialize``.

    Attributes:
      coordinator_address: ``HOST:PORT`` of process 0's coordination service.
      num_processes: how many processes take part.
      process_id: this process's index, in ``[0, num_processes)``.
      distributed_timeout_s: how long to wait for the peers at start-up, and for a peer's
        heartbeat while running, before giving up.
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    distributed_timeout_s: int = 300

    @property
    def explicit(self) -> bool:
        return any(v is not None for v in self._members().values())

    def _members(self) -> dict:
        return {
            "coordinator_address": self.coordinator_address,
            "num_processes": self.num_processes,
            "process_id": self.process_id,
        }

    def of_run(self, k: int) -> Cluster:
        """The cluster of run ``k`` of a sweep every host runs: its own coordinator port,
        ``PORT + 1 + k``, so that runs side by side do not share one."""
        host, port = self.coordinator_address.rsplit(":", 1)
        return dataclasses.replace(self, coordinator_address=f"{host}:{int(port) + 1 + k}")

    def flags(self) -> tuple[str, ...]:
        """The command-line flags that give this cluster."""
        return tuple(f"--{k}={v}" for k, v in dataclasses.asdict(self).items() if v is not None)

    def validate(self, distributed: bool) -> Cluster:
        """Raise ValueError with a one-line message for a missing or inconsistent flag."""
        members = self._members()
        if self.explicit and not distributed:
            given = next(k for k, v in members.items() if v is not None)
            raise ValueError(f"--{given}: only applies with --distributed")
        missing = [k for k, v in members.items() if v is None]
        if self.explicit and missing:
            raise ValueError(
                f"--{missing[0]}: missing; give --coordinator_address, --num_processes and "
                "--process_id together (or none of them, for JAX to detect the cluster)"
            )
        address = self.coordinator_address
        if address is not None and not re.fullmatch(r"[^\s:]+:\d{1,5}", address):
            raise ValueError(f"--coordinator_address={address!r}: expected HOST:PORT")
        if self.num_processes is not None and self.num_processes < 1:
            raise ValueError(f"--num_processes={self.num_processes}: expected a positive number")
        if self.process_id is not None and not 0 <= self.process_id < self.num_processes:
            raise ValueError(
                f"--process_id={self.process_id}: expected 0 <= id < --num_processes="
                f"{self.num_processes}"
            )
        if self.distributed_timeout_s <= 0:
            raise ValueError(
                f"--distributed_timeout_s={self.distributed_timeout_s}: expected a positive number"
            )
        return self


class _Settings(typing.NamedTuple):
    """What this process was set up with."""

    distributed: bool
    cluster: Cluster
    cache_dir: str | None


_done: _Settings | None = None


def setup_process(config: TrainConfig, cluster: Cluster | None = None) -> None:
    """Make the process-wide settings of ``config`` (``--distributed`` with ``cluster``,
    ``--compilation_cache_dir``) once. A later call (each run of a comparison, library use)
    with the same ``--distributed`` (and ``cluster``, if given) does nothing; others are an
    error; another cache directory is logged and ignored (JAX reads it once)."""
    global _done
    wanted = _Settings(
        config.distributed,
        (cluster or Cluster()).validate(config.distributed),
        config.compilation_cache_dir,
    )
    if _done is not None:
        if _done.distributed != wanted.distributed or cluster not in (None, _done.cluster):
            raise ValueError(
                f"--distributed={config.distributed}: this process was set up with "
                f"--distributed={_done.distributed} ({_done.cluster}); one process takes one "
                "cluster"
            )
        if wanted.cache_dir and wanted.cache_dir != _done.cache_dir:
            logging.info(
                "--compilation_cache_dir=%s ignored: this process uses %s",
                wanted.cache_dir,
                _done.cache_dir,
            )
        return
    if config.distributed:
        _initialize(wanted.cluster)
    if config.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _done = wanted


def _initialize(cluster: Cluster) -> None:
    """``jax.distributed.initialize`` with the cluster's flags (auto-detection without them);
    its errors become one line naming ``--distributed``."""
    timeout = int(cluster.distributed_timeout_s)
    try:
        jax.distributed.initialize(
            coordinator_address=cluster.coordinator_address,
            num_processes=cluster.num_processes,
            process_id=cluster.process_id,
            initialization_timeout=timeout,
            heartbeat_timeout_seconds=timeout,
        )
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--distributed: {first}") from None
    if jax.process_count() > 1:
        prefix_lines(label)
    logging.info(
        "process %d of %d, %d devices in all",
        jax.process_index(),
        jax.process_count(),
        jax.device_count(),
    )


def several_processes() -> bool:
    """Whether this process, set up by :func:`setup_process`, is one of several."""
    return bool(_done) and jax.process_count() > 1


def label() -> str:
    """``"[process I] "`` in a run of several processes, else ``""``: what other processes'
    log lines and errors start with."""
    return f"[process {jax.process_index()}] " if several_processes() else ""


class LostProcessError(RuntimeError):
    """Another process of the run stopped: this one cannot go on (rerun on every host to
    resume from the last checkpoint)."""


def lost_process_error(error: Exception, timeout_s: float) -> LostProcessError | None:
    """When ``error`` (a failed dispatch or collective) came from a lost peer of a multi-host
    run: a one-line :class:`LostProcessError` naming the processes the coordination service
    stopped seeing, polled for up to ``timeout_s`` (its heartbeat timeout); else None (every
    process alive after that: the error is this process's own)."""
    if not _done or not _done.distributed or jax.process_count() < 2:
        return None
    # Only a runtime failure (a dispatch, a collective) can be a peer's death. Asking who is
    # alive is itself collective (it returns once every live process has asked), so another
    # error, this process's own (a held workdir, a full disk), must not ask: it would wait
    # there until the others fail too.
    if not any(isinstance(e, jax.errors.JaxRuntimeError) for e in _chain(error)):
        return None
    # The service may have yet to notice the death: wait for it.
    lost, deadline = _lost_processes(), time.monotonic() + timeout_s
    while not lost and time.monotonic() < deadline:
        lost = _lost_processes()
        if not lost:
            time.sleep(0.5)
    if not lost:  # every process is alive: an error of its own
        return None
    who = f"process {', '.join(map(str, lost))}"
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return LostProcessError(
        f"lost {who} of {jax.process_count()} ({type(error).__name__}: {first}); rerun the same "
        "command on every host to resume from the last checkpoint"
    )


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or during."""
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def _lost_processes() -> list[int]:
    """The processes the coordination service no longer sees alive; [] while it sees all or
    cannot be asked (the coordinator itself is gone: then process 0 is lost)."""
    from jax._src import distributed  # the client of jax.distributed.initialize

    everyone = list(range(jax.process_count()))
    try:
        live = distributed.global_state.client.get_live_nodes(everyone)
    except Exception:  # noqa: BLE001 - any failure to reach the coordinator means it is gone
        return [0] if jax.process_index() != 0 else []
    return [p for p in everyone if p not in live]


def timeout_s() -> float:
    """The ``--distributed_timeout_s`` this process was set up with."""
    return float(_done.cluster.distributed_timeout_s) if _done else 0.0


# Set in the environment of the process a supervisor starts (:func:`supervise`): the file
# descriptor of the pipe its final line goes to (:func:`report_last`).
_SUPERVISED = "FCN_SUPERVISED"
_last_line_fd: int | None = None  # in a supervised child


def report_last(line: str) -> None:
    """The command's last line (its one-line error): in a supervised child, handed to the
    supervisor, which prints it once this process is gone, so that nothing this process's
    threads log (JAX's C++ runtime) can follow it; else printed to stderr here."""
    if _last_line_fd is not None:
        try:
            os.write(_last_line_fd, (line + "\n").encode())
            return
        except OSError:  # the supervisor is gone: say it here
            pass
    print(line, file=sys.stderr, flush=True)


def supervise(process_id: int | None, num_processes: int | None) -> int | None:
    """Run this command again as a child process and return its exit status (None: this is
    that child; go on). A multi-host command runs this way because JAX's distributed client
    ends its process with SIGABRT, from a C++ thread Python cannot catch, when the
    coordination service (process 0's) is gone: the supervisor then says so in one line and
    exits 1. The child's own one-line error comes through a pipe and is printed after the
    child is gone: always the last line. It forwards SIGINT and SIGTERM, and the child dies
    with it (Linux)."""
    global _last_line_fd
    if (fd := os.environ.pop(_SUPERVISED, None)) is not None:  # popped: not for its children
        _last_line_fd = int(fd)
        return None
    read, write = os.pipe()
    child = subprocess.Popen(
        [sys.executable, *sys.orig_argv[1:]],
        env={**os.environ, _SUPERVISED: str(write)},
        pass_fds=(write,),
        preexec_fn=_die_with_parent,
    )
    os.close(write)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda n, _: child.send_signal(n))
    status = child.wait()
    last = _read_available(read)
    if last:
        print(last.rstrip("\n"), file=sys.stderr, flush=True)
    if last or status != -signal.SIGABRT:
        return status if status >= 0 else 128 - status
    me = process_id if process_id is not None else _scheduler_rank()
    who = f"[process {me}] " if me is not None else ""
    lost = "process 0" if me != 0 else "a process"
    of = f" of {num_processes}" if num_processes else ""
    print(
        f"error: {who}lost {lost}{of} (JAX's distributed runtime aborted this process: the "
        "coordination service stopped answering); rerun the same command on every host to "
        "resume from the last checkpoint",
        file=sys.stderr,
        flush=True,
    )
    return 1


def _read_available(fd: int) -> str:
    """What the pipe holds now, without waiting (a process the child forked may hold its
    write end open), and the pipe closed."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def _scheduler_rank() -> int | None:
    """This process's rank as the cluster's launcher gave it (Slurm, Open MPI), if any."""
    for var in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return None


def _die_with_parent() -> None:
    """In the child: be killed when the supervisor dies (prctl PR_SET_PDEATHSIG), so that
    killing a host's command ends its JAX process too."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the child outlives a killed supervisor
        pass
