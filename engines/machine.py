"""What machine a measurement ran on: one dict for every benchmark and self-test report.

``engines.selftest``, ``realtime.bench`` and ``demo.bench`` all record the machine beside
their numbers (a timing means nothing without it). They used to collect it three ways, with
different key names for the same thing; :func:`machine_info` is the one collector and each
caller adds only what is its own (ONNX Runtime's providers, OpenCV's version, chromium's
version and the load average). It lives in ``engines`` because that is the lowest package all
three may import (demo -> realtime -> engines -> fgsl).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows:
    ``platform.processor()`` is empty or only the architecture on most Linux machines."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int | None:
    """CPUs this process may run on (its affinity mask: a container or ``taskset`` may allow
    fewer than the machine has), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def machine_info() -> dict[str, Any]:
    """The machine: CPU model, CPU counts, OS, Python, and torch's version and GPU.

    Keys: ``cpu`` (model name), ``cpus`` (the machine's), ``usable_cpus`` (this process's),
    ``platform``, ``python``; with torch loaded also ``torch``, ``cuda`` (whether torch sees a
    CUDA device), ``gpu`` (its name, or ``None``) and on a GPU ``capability`` ([major, minor]).
    torch is asked only when something already imported it: reading a version must not load
    torch (seconds, and CUDA's libraries) for a report that did not use it.
    """
    info: dict[str, Any] = {"cpu": cpu_name(), "cpus": os.cpu_count(), "usable_cpus": usable_cpus(),
                            "platform": platform.platform(), "python": platform.python_version()}
    torch = sys.modules.get("torch")
    if torch is not None:
        cuda = bool(torch.cuda.is_available())
        info.update(torch=torch.__version__, cuda=cuda, gpu=torch.cuda.get_device_name(0) if cuda else None)
        if cuda:
            info["capability"] = list(torch.cuda.get_device_capability(0))
    return info
