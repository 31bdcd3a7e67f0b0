"""Boolean attention masks (chapter 5). Convention: **True = may attend**, the same
as :func:`torch.nn.functional.scaled_dot_product_attention`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._checks import check_int


def causal_mask(
    n_queries: int, n_keys: int | None = None, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """Mask that lets each query see its own position and the ones before it.

    The queries are the *last* ``n_queries`` positions of the key sequence, so the
    diagonal is aligned bottom-right: query ``i`` may attend to key ``j`` when
    ``j <= i + (n_keys - n_queries)``. With more keys than queries (new tokens
    after a cache of old ones), the last query sees every key. This differs from
    ``scaled_dot_product_attention(is_causal=True)``, which aligns top-left.

    Args:
        n_queries: number of queries (an int, or a size read off a tensor's shape,
            symbolic under ``torch.compile``/``torch.export``).
        n_keys: number of keys; defaults to ``n_queries``.
        device: where to make the mask.

    Shape:
        - output: ``(n_queries, n_keys)``, bool

    Example:
        >>> causal_mask(3).int()
        tensor([[1, 0, 0],
                [1, 1, 0],
                [1, 1, 1]], dtype=torch.int32)
        >>> causal_mask(2, 4).int()
        tensor([[1, 1, 1, 0],
                [1, 1, 1, 1]], dtype=torch.int32)
    """
    n_queries = check_int("n_queries", n_queries)
    n_keys = n_queries if n_keys is None else check_int("n_keys", n_keys)
    # Compare positions rather than `tril(diagonal=n_keys - n_queries)`: the
    # diagonal of tril must be a plain int, and under torch.export the sizes are
    # symbolic.
    query_position = torch.arange(n_queries, device=device) + (n_keys - n_queries)
    key_position = torch.arange(n_keys, device=device)
    return key_position <= query_position[:, None]  # (n_queries, n_keys)


def padding_mask(
    lengths: torch.Tensor | np.ndarray | Sequence[int],
    max_len: int | torch.Tensor | None = None,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Mask that marks the real tokens of right-padded sequences.

    Args:
        lengths: the length of each sequence: an integer tensor, a NumPy array
            or a list of ints.
        max_len: the padded length (an int, a 0-dim integer tensor, or a size
            read off a tensor's shape); defaults to the longest length. Pass it
            under ``torch.compile``, where reading the longest length back from
            the device would break the graph.
        device: where to make the mask when ``lengths`` is a list; a tensor's
            own device is used otherwise.

    Shape:
        - lengths: ``(batch,)``
        - output: ``(batch, max_len)``, bool, **True = real token**. To mask keys,
          insert the query dimension: ``mask[:, None, :]`` for ``(batch, n_q, n_k)``
          scores, ``mask[:, None, None, :]`` with a heads dimension.

    Example:
        >>> padding_mask([3, 1], max_len=4).int()
        tensor([[1, 1, 1, 0],
                [1, 0, 0, 0]], dtype=torch.int32)
    """
    if isinstance(lengths, np.ndarray):
        lengths = torch.from_numpy(lengths).to(device)
    if not isinstance(lengths, torch.Tensor):
        if not isinstance(lengths, Sequence):
            raise TypeError(
                "lengths must be a 1-D integer tensor or a list of ints, "
                f"got {type(lengths).__name__}"
            )
        values = [check_int(f"lengths[{i}]", n) for i, n in enumerate(lengths)]
        if max_len is None:
            max_len = max(values, default=0)
        lengths = torch.tensor(values, dtype=torch.long, device=device)
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
        raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D (batch,), got shape {tuple(lengths.shape)}")
    # Checking the values reads them back from the device: eager mode only. Under
    # torch.compile they would break the graph (pass max_len there), and a meta
    # tensor has no values.
    checkable = lengths.device.type != "meta" and not torch.compiler.is_compiling()
    if max_len is None:
        if not checkable:
            raise ValueError(
                "max_len is required when lengths is on the meta device or compiled"
            )
        max_len = int(lengths.max()) if lengths.numel() else 0
    max_len = check_int("max_len", max_len)
    if checkable and lengths.numel():
        low, high = int(lengths.min()), int(lengths.max())
        if low < 0 or high > max_len:
            raise ValueError(f"lengths must lie in [0, max_len={max_len}], got {low} to {high}")
    positions = torch.arange(max_len, device=lengths.device)  # (max_len,)
    return positions < lengths[:, None]  # (batch, max_len)
