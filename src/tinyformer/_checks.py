"""Argument checks shared by every module: each names the argument, what was
expected and what came, so a mistake fails at the door and not deep in a matmul."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch


def check_tensor(name: str, value: object, *, min_dim: int = 0) -> torch.Tensor:
    """Raise unless ``value`` is a tensor with at least ``min_dim`` dimensions."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimensions, got shape {tuple(value.shape)}"
        )
    return value


def check_floating(name: str, value: torch.Tensor) -> None:
    """Raise unless ``value`` holds floating-point numbers."""
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")


def check_bool_mask(name: str, mask: object) -> torch.Tensor:
    """Return ``mask``, or raise unless it is a bool tensor (True = may attend)."""
    mask = check_tensor(name, mask)
    if mask.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a bool tensor (True = may attend), got dtype {mask.dtype}; "
            "from an additive float mask (0 / -inf) or PyTorch's True = ignore, "
            "use tinyformer.mask_from_torch"
        )
    return mask


def check_int(name: str, value: object, *, minimum: int = 0) -> int:
    """Return ``value`` as an int, or raise unless it is a whole number >= ``minimum``.

    A symbolic size (``torch.SymInt``, met under ``torch.compile`` and
    ``torch.export``) is returned as it is, so that sizes read off a tensor's
    shape stay symbolic; a 0-dim integer tensor is read as its value.
    """
    if isinstance(value, torch.SymInt):
        if value < minimum:  # a guard on the symbol, not a graph break
            raise ValueError(f"{name} must be at least {minimum}, got {value}")
        return value  # type: ignore[return-value]
    if isinstance(value, torch.Tensor) and value.dim() == 0 and _is_integer(value.dtype):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def check_real(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise unless it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if value != value or abs(value) == math.inf:  # math.isfinite breaks a compiled graph
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def broadcast_shape(*shapes: Sequence[Any]) -> tuple[Any, ...] | None:
    """The shape that ``shapes`` broadcast to, or None if they do not broadcast.

    Same rule as :func:`torch.broadcast_shapes`, in plain Python, for two reasons:
    that function costs several microseconds a call, which every attention call
    would pay; and the rule here compares sizes with ``==`` only, one pair at a
    time, so that under ``torch.compile(dynamic=True)`` a symbolic length stays
    symbolic (hashing it into a set would specialise it: one compilation per
    length).
    """
    ndim = 0
    for shape in shapes:  # not max(..., default=0): dynamo cannot trace `default`
        ndim = max(ndim, len(shape))
    result: list[Any] = [1] * ndim
    for shape in shapes:
        offset = ndim - len(shape)
        for axis, size in enumerate(shape, start=offset):
            if size == 1:
                continue
            if result[axis] == 1:
                result[axis] = size
            elif result[axis] != size:
                return None
    return tuple(result)


def check_dropout(name: str, p: object) -> float:
    """Return ``p``, or raise unless it is a probability in [0, 1)."""
    p = check_real(name, p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p}")
    return p
