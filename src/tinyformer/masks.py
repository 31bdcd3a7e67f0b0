"""Boolean attention masks (chapter 5). Convention: **True = may attend**, the same
as :func:`torch.nn.functional.scaled_dot_product_attention`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._checks import broadcast_shape, check_bool_mask, check_int, check_tensor


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


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Combine boolean masks: a key may be attended to only if *every* mask allows it.

    ``None`` stands for "no mask" and is skipped; the masks broadcast against
    each other like tensors do.

    Args:
        masks: bool tensors, **True = may attend**, or ``None``.

    Returns:
        The logical AND of the masks, or ``None`` if every mask is ``None``.

    Shape:
        - masks: broadcastable to one another, e.g. ``(n_q, n_k)`` and
          ``(batch, 1, 1, n_k)``
        - output: their broadcast shape, e.g. ``(batch, 1, n_q, n_k)``

    Example:
        >>> padding = padding_mask([2, 3])[:, None, :]  # (2, 1, 3)
        >>> combine_masks(causal_mask(3), padding, None)[0].int()
        tensor([[1, 0, 0],
                [1, 1, 0],
                [1, 1, 0]], dtype=torch.int32)
    """
    result = None
    for index, mask in enumerate(masks):
        if mask is None:
            continue
        check_bool_mask(f"masks[{index}]", mask)
        if result is not None and broadcast_shape(result.shape, mask.shape) is None:
            raise ValueError(
                f"masks[{index}] of shape {tuple(mask.shape)} does not broadcast with "
                f"the masks before it, of shape {tuple(result.shape)}"
            )
        result = mask if result is None else result & mask
    return result


def mask_from_torch(attn_mask: torch.Tensor) -> torch.Tensor:
    """Convert one of PyTorch's *ignore* masks to ours (**True = may attend**).

    ``nn.MultiheadAttention``'s boolean ``attn_mask`` and ``key_padding_mask``
    (and ``nn.Transformer``'s) mean True = *do not attend*, the opposite of
    :func:`torch.nn.functional.scaled_dot_product_attention` and of this library.
    An additive float mask (0 to keep, ``-inf`` to drop) is accepted too; one
    holding other values is a bias, not a mask, and is refused.

    Args:
        attn_mask: bool (True = ignore) or float (0 or ``-inf``) tensor.

    Shape:
        - attn_mask: any, e.g. ``(n_q, n_k)`` or a key padding mask ``(batch, n_k)``
        - output: the same, bool, **True = may attend**. A key padding mask
          becomes ``mask[:, None, None, :]`` for ``(batch, heads, n_q, n_k)``.

    Example:
        >>> ignore = torch.tensor([[False, True], [False, False]])
        >>> mask_from_torch(ignore).int()
        tensor([[1, 0],
                [1, 1]], dtype=torch.int32)
        >>> mask_from_torch(torch.tensor([0.0, float("-inf")]))
        tensor([ True, False])
    """
    attn_mask = check_tensor("attn_mask", attn_mask)
    if attn_mask.dtype == torch.bool:
        return ~attn_mask
    if not attn_mask.is_floating_point():
        raise TypeError(
            f"attn_mask must be a bool (True = ignore) or float (0 / -inf) tensor, "
            f"got dtype {attn_mask.dtype}"
        )
    keep = attn_mask == 0
    checkable = attn_mask.device.type != "meta" and not torch.compiler.is_compiling()
    if checkable and not bool((keep | (attn_mask == float("-inf"))).all()):
        raise ValueError(
            "attn_mask holds values other than 0 and -inf: it is an additive bias, "
            "not a mask; add it to the scores instead"
        )
    return keep


def mask_to_torch(mask: torch.Tensor) -> torch.Tensor:
    """Convert our mask (**True = may attend**) to PyTorch's *ignore* convention.

    The result is what ``nn.MultiheadAttention`` takes as a boolean ``attn_mask``
    or ``key_padding_mask`` (True = do not attend).

    Shape:
        - mask: any, bool
        - output: the same, bool, **True = ignore**

    Example:
        >>> mask_to_torch(padding_mask([1, 2])).int()
        tensor([[0, 1],
                [0, 0]], dtype=torch.int32)
    """
    return ~check_bool_mask("mask", mask)
