"""The machine a benchmark ran on, recorded beside its figures (torch-free: start-up benchmarks
must not pay for importing what they measure).

    from machine import describe_machine      # benchmarks/ is sys.path[0] for `python benchmarks/x.py`
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from pathlib import Path


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo, or ``unknown``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def describe_machine(**extra) -> dict:
    """CPU, cores, memory, library versions, date and load average; ``extra`` items appended."""
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "torch": _version("torch"),
        "python": platform.python_version(),
        "pillow": _version("pillow"),
        "imagecodecs": _version("imagecodecs"),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": list(os.getloadavg()),
        **extra,
    }
