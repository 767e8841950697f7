"""The machine an audit ran on, as far as precision defaults care: the CPU features that make
OpenVINO pick BF16 (avx512_bf16, AMX) or FP16 (avx512_fp16, Arm fp16) among them."""

from __future__ import annotations

import contextlib
import functools
import platform
from typing import Any

from modelparity import __version__


def environment() -> dict[str, Any]:
    import datetime

    import psutil

    return {
        # when the audit ran: a report re-rendered later says when it was measured, not drawn
        "audited_at": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
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


@functools.cache
def nvidia_gpu() -> tuple[str, int] | None:
    """(name, compute capability x10) of the first NVIDIA GPU, from nvidia-smi; None when there
    is none (or no driver). The TF32 rules need compute capability 8.0 (Ampere) or newer."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True)
        name, cap = done.stdout.strip().splitlines()[0].rsplit(",", 1)
        major, _, minor = cap.strip().partition(".")
        return name.strip(), int(major) * 10 + int(minor or 0)
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None
