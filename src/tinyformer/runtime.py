"""Where and how big to run: the run profile and the device.

One chapter serves as a fast test, a page of the CPU-built book and a GPU lab.
:func:`profile` says which of the three this run is, and :func:`per_profile`
picks the sizes for it in one visible line.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

PROFILES = ("smoke", "cpu", "gpu")
PROFILE_VARIABLE = "TINYFORMER_PROFILE"

T = TypeVar("T")


def profile() -> str:
    """Return the run profile: ``"smoke"``, ``"cpu"`` or ``"gpu"``.

    The environment variable ``TINYFORMER_PROFILE`` wins; otherwise ``"gpu"`` when
    CUDA is available, else ``"cpu"``. The notebook tests set ``smoke``.

    Example:
        >>> profile() in ("smoke", "cpu", "gpu")
        True
    """
    chosen = os.environ.get(PROFILE_VARIABLE, "").strip().lower()
    if chosen:
        if chosen not in PROFILES:
            raise ValueError(
                f"{PROFILE_VARIABLE} must be one of {', '.join(PROFILES)}, "
                f"got {os.environ[PROFILE_VARIABLE]!r}"
            )
        return chosen
    return "gpu" if torch.cuda.is_available() else "cpu"


def per_profile(*, smoke: T, cpu: T, gpu: T) -> T:
    """Pick the value for the current :func:`profile`.

    Example:
        >>> n_samples = per_profile(smoke=1_000, cpu=20_000, gpu=200_000)
    """
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[profile()]


def pick_device() -> torch.device:
    """Return the fastest device here: CUDA, then Apple's MPS, then the CPU.

    Example:
        >>> pick_device().type in ("cuda", "mps", "cpu")
        True
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def peak_memory(call: Callable[[], T], device: torch.device | str = "cpu") -> tuple[T, int]:
    """Run ``call()`` and return its result and the peak memory it added, in bytes.

    On CUDA: the caching allocator's peak during the call, above what was
    allocated before it. On a Linux CPU: the process's peak resident size during
    the call (``VmHWM``, reset first through ``/proc/self/clear_refs``) above its
    resident size before. So that freed memory really leaves the process, the
    first call asks glibc (``mallopt``) to serve every block of 64 KiB or more
    with its own mapping, returned to the system when freed, and trims what is
    already free (``malloc_trim``): otherwise the allocator keeps freed blocks, the
    call reuses them, and the figure measures malloc, not the call.
    The figure is rounded to memory pages. Elsewhere (macOS, Windows) it raises.

    Example:
        >>> result, peak = peak_memory(lambda: torch.ones(2**24).sum())  # 64 MiB
        >>> 60 < peak / 2**20 < 72  # MiB, to a few pages
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = call()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu":
        raise ValueError(f"peak_memory measures cpu or cuda, got device {device}")
    libc = _return_freed_memory()
    gc.collect()
    libc.malloc_trim(0)  # memory freed before the threshold was set leaves too
    before = _status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from here
    result = call()
    return result, max(_status_bytes("VmHWM") - before, 0)


_LIBC: ctypes.CDLL | None = None


def _return_freed_memory() -> ctypes.CDLL:
    """glibc, told to map (and unmap when freed) every block of 64 KiB or more."""
    global _LIBC
    if _LIBC is not None:
        return _LIBC
    if sys.platform != "linux":
        raise RuntimeError("peak_memory on the CPU needs Linux (/proc/self/status)")
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt's parameters, from malloc.h
    if not (libc.mallopt(m_mmap_threshold, 65536) and libc.mallopt(m_trim_threshold, 0)):
        raise RuntimeError("glibc's mallopt refused to set the mmap threshold")
    _LIBC = libc
    return libc


def _status_bytes(field: str) -> int:
    """A size from /proc/self/status, in bytes (the file gives kB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} is not in /proc/self/status")
