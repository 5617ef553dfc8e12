"""Command-line runs shared by the tests: several ``python ...`` processes at once, on CPU."""

import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_devices(n: int) -> dict[str, str]:
    """The environment for ``n`` CPU devices, keeping the XLA flags the tests set (conftest)."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
    return {"XLA_FLAGS": flags.strip()}


def run_pythons(
    *commands: tuple[str, ...], timeout: float = 300, env: dict | None = None
) -> list[subprocess.CompletedProcess]:
    """Run ``python ARGS...`` for each command at once (their start-ups overlap), on CPU, from
    the repository root; every process is ended before this returns or raises. ``env``: the
    environment of the last command only (e.g. its device count)."""
    base = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env={**base, **(env or {})} if k == len(commands) - 1 else base,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for k, args in enumerate(commands)
    ]
    try:
        done = []
        for args, proc in zip(commands, procs):
            out, err = proc.communicate(timeout=timeout)
            done.append(
                subprocess.CompletedProcess([sys.executable, *args], proc.returncode, out, err)
            )
        return done
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a coordinator, a Slurm daemon)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
