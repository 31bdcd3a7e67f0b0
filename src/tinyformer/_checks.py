"""Argument checks shared by every module: each names the argument, what was
expected and what came, so a mistake fails at the door and not deep in a matmul."""

from __future__ import annotations

import numbers

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


def check_int(name: str, value: object, *, minimum: int = 0) -> int:
    """Return ``value`` as an int, or raise unless it is a whole number >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def check_real(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise unless it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape that ``shapes`` broadcast to, or None if they do not broadcast.

    Same rule as :func:`torch.broadcast_shapes`, in plain Python: that function
    costs several microseconds a call, which every attention call would pay.
    """
    if all(shape == shapes[0] for shape in shapes[1:]):  # the common case, fast
        return tuple(shapes[0])
    ndim = max(len(shape) for shape in shapes)
    padded = [(1,) * (ndim - len(shape)) + tuple(shape) for shape in shapes]
    result = []
    for sizes in zip(*padded, strict=True):
        other = {size for size in sizes if size != 1}
        if len(other) > 1:
            return None
        result.append(other.pop() if other else 1)
    return tuple(result)
