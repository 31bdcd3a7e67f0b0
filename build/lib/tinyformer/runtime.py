"""Where and how big to run: the run profile and the device.

One chapter serves as a fast test, a page of the CPU-built book and a GPU lab.
:func:`profile` says which of the three this run is, and :func:`per_profile`
picks the sizes for it in one visible line.
"""

from __future__ import annotations

import os
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
