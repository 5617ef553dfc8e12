"""One run per workdir: :class:`WorkdirLock`, an OS lock (``flock``) on ``WORKDIR/.lock``.

The kernel drops the lock when its holder's process ends, however it ends, so a killed run
never leaves a stale lock; the file (left in place: removing it would race a run opening it)
names the holder's pid and host while it is held. Where the filesystem cannot lock, the run
goes on with a warning. Deliberately free of JAX: the lock is taken before the run is built.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time

from absl import logging

LOCK_FILE = ".lock"
# Errors of a filesystem without working locks (some NFS, FUSE mounts): run unguarded.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class WorkdirBusy(ValueError):
    """Another live run holds the workdir (one line, naming its pid and host)."""


class WorkdirLock:
    """The lock of one workdir, held from :meth:`acquire` until :meth:`release` (or the end of
    the ``with`` block, or of the process). ``holder=False`` (processes other than 0 of a
    multi-host run) makes every call a no-op."""

    def __init__(self, workdir: str, *, holder: bool = True, flag: str = "--workdir"):
        self.workdir, self._holder, self._flag = workdir, holder, flag
        self._fd: int | None = None

    @property
    def path(self) -> str:
        return os.path.join(self.workdir, LOCK_FILE)

    def acquire(self) -> bool:
        """Take the lock if the workdir exists (a workdir not made yet holds no run to
        disturb): True when held. Raises :class:`WorkdirBusy` when a live run holds it, and
        ``ValueError`` in one line when the directory cannot hold the lock file (read-only)."""
        if not self._holder or self._fd is not None:
            return self._fd is not None
        if not os.path.isdir(self.workdir):
            return False
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ValueError(f"{self._flag}={self.workdir}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise WorkdirBusy(self._busy_message()) from None
            if e.errno not in _NO_LOCKS:
                raise ValueError(f"{self._flag}={self.workdir}: cannot lock ({e})") from None
            logging.warning("%s: this filesystem cannot lock (%s); running unguarded", self.path, e)
            return False
        self._fd = fd
        _write_holder(fd)
        return True

    def release(self) -> None:
        """Let the workdir go (the file emptied first: it names no holder once released)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:  # a full or read-only disk: the lock still goes with the descriptor
            pass
        os.close(fd)

    def __enter__(self) -> WorkdirLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _busy_message(self) -> str:
        holder = read_holder(self.path)
        who = (
            f"pid {holder.get('pid')} on {holder.get('host')} (started {holder.get('started')})"
            if holder
            else "another process"
        )
        return (
            f"{self._flag}={self.workdir} is in use by the run of {who}: one run per workdir; "
            "wait for it to end, or use another directory"
        )


def _write_holder(fd: int) -> None:
    """Record this process in the lock file; best effort (a full disk still locks)."""
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    except OSError:
        pass


def read_holder(path: str, wait_s: float = 1.0) -> dict | None:
    """The holder a lock file names; waits up to ``wait_s`` for a run that has just taken the
    lock to write itself in. None when it names nobody."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with open(path) as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def busy(workdir: str) -> str | None:
    """The one-line reason a run cannot start in ``workdir`` now (a live run holds it), or
    None: what launchers check before they touch a run's files."""
    lock = WorkdirLock(workdir)
    try:
        lock.acquire()
    except WorkdirBusy as e:
        return str(e)
    except ValueError:  # unwritable: the run itself will say so
        return None
    finally:
        lock.release()
    return None
