"""The machine an audit ran on, as far as precision defaults care: the CPU features that make
OpenVINO pick BF16 (avx512_bf16, AMX) or FP16 (avx512_fp16, Arm fp16) among them."""

from __future__ import annotations

import contextlib
import platform
from typing import Any

from modelparity import __version__


def environment() -> dict[str, Any]:
    import psutil

    return {
        "modelparity": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": psutil.cpu_count(),
    }


def cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The CPU features that decide a runtime's default precision (BF16/FP16/AMX)."""
    wanted = ("avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "amx_tile", "avx512f",
              "avx2", "asimdhp", "bf16", "fphp")
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith(("flags", "Features")):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in wanted if flag in present]
    return []
