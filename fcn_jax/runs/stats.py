"""Numbers shared by the comparison and the sweep: mean ± std over seeds, their text, size
keys in a readable order, and what the numbers were measured on."""

from __future__ import annotations

import math
import os
import platform

import numpy as np

from fcn_jax.sizes import parse_size


def stats(values) -> dict:
    """``{"mean", "std", "values"}``; std is the sample std over seeds (None for one value);
    None values (e.g. no throughput) are left out of mean and std."""
    values = [None if v is None else float(v) for v in values]
    present = [v for v in values if v is not None]
    mean = float(np.mean(present)) if present else None
    std = float(np.std(present, ddof=1)) if len(present) > 1 else None
    return {"mean": mean, "std": std, "values": values}


def fmt(stat: dict | None, digits: int = 3) -> str:
    """``0.912 ± 0.004`` (no ± for one seed; ``–`` when missing)."""
    if not stat or stat.get("mean") is None:
        return "–"
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['std']:.{digits}f}" if stat.get("std") is not None else "")


def sort_sizes(keys) -> list[str]:
    """Size keys ("28x16") by area, then by shape."""
    parsed = {k: parse_size(k) for k in keys}
    return sorted(parsed, key=lambda k: (math.prod(parsed[k]), parsed[k]))


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity; the machine's count where unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_info() -> dict:
    """Platform, CPU model and count, load, Python, jax and its devices (this imports jax and
    starts its backend): what results were measured on."""
    import jax

    devices = jax.devices()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),  # the machine's
        "cores": usable_cores(),
        "load_average_1m": load_average(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind,
    }


def load_average() -> float:
    """The 1-minute load average: other processes sharing the cores (NaN where unknown)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"
