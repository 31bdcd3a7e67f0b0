"""Scaled dot-product attention (chapters 1 to 3).

The formula, for queries ``Q``, keys ``K`` and values ``V``::

    Attention(Q, K, V) = softmax(scale * Q K^T) V,      scale = 1 / sqrt(d_k)

Two paths compute it. Without ``return_weights`` we call PyTorch's fused
:func:`torch.nn.functional.scaled_dot_product_attention`, which never builds the
``(n_q, n_k)`` weight matrix on the GPU. With ``return_weights`` we need that
matrix, so we write the formula out. Tests hold the two paths equal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._checks import broadcast_shape, check_bool_mask, check_floating, check_real, check_tensor
from .masks import causal_mask


def dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    return_weights: bool = False,
    bias: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attend from each query to the keys and average their values.

    Each query ``q`` scores every key ``k_j`` by ``scale * q . k_j``; a softmax over
    the allowed keys turns the scores into weights ``alpha_j`` (non-negative,
    summing to one), and the output is ``sum_j alpha_j v_j``.

    Args:
        query: the queries.
        key: the keys, one per value.
        value: the values.
        mask: optional bool tensor, **True = may attend**, broadcastable to
            ``(..., n_q, n_k)`` (of any rank up to that of the output: ``(n_k,)``,
            ``(n_q, n_k)``, ``(batch, 1, 1, n_k)``...). A query whose keys are all
            masked gets a zero output, zero weights and zero gradient, never NaN.
            Keys that no query may see, and queries that may see no key, never
            reach the result, even if they hold inf or NaN (padding garbage).
        scale: multiplies the scores; ``None`` means ``1 / sqrt(d_k)``, and
            ``scale=1.0`` is plain dot-product attention. It multiplies the
            queries before the product, so that half precision does not overflow.
        is_causal: let each query see only the keys up to its own position, the
            queries being the *last* ``n_q`` positions (bottom-right, like
            :func:`~tinyformer.causal_mask`). Combines with ``mask`` (both must
            allow a key). With ``n_q == n_k`` and no other mask this runs SDPA's
            causal kernel and never builds the ``(n_q, n_k)`` mask.
        dropout_p: probability of zeroing each weight (the survivors are scaled
            by ``1 / (1 - dropout_p)``). Applied whenever it is positive: pass
            ``0.0`` at evaluation time.
        bias: optional float tensor added to the scaled scores before the
            softmax, broadcastable to ``(..., n_q, n_k)``: a position bias such
            as ALiBi's (:func:`~tinyformer.alibi_bias`). Keep it finite; to
            forbid a key use ``mask``.
        return_weights: also return the attention weights (slower: the full
            ``(n_q, n_k)`` matrix is built). In half precision the scores, the
            softmax and the product with the values are computed in float32, and
            the results returned in the input's dtype.

    Returns:
        The output, or ``(output, weights)`` when ``return_weights`` is true.
        The weights are the ones the output was computed with (after dropout).

    Shape:
        - query: ``(..., n_q, d_k)``
        - key: ``(..., n_k, d_k)``
        - value: ``(..., n_k, d_v)``
        - mask, bias: broadcastable to ``(..., n_q, n_k)``
        - output: ``(..., n_q, d_v)``
        - weights: ``(..., n_q, n_k)``

        The leading dimensions ``...`` (batch, heads) broadcast against each other.

    Example:
        >>> query = torch.randn(2, 5, 8)  # (batch, n_q, d_k)
        >>> key, value = torch.randn(2, 7, 8), torch.randn(2, 7, 3)
        >>> out, weights = dot_product_attention(
        ...     query, key, value, return_weights=True
        ... )
        >>> out.shape, weights.shape
        (torch.Size([2, 5, 3]), torch.Size([2, 5, 7]))
        >>> torch.allclose(weights.sum(-1), torch.ones(2, 5))
        True
    """
    batch_shape = _check_inputs(query, key, value)
    n_q, n_k, d_k = query.shape[-2], key.shape[-2], query.shape[-1]
    if mask is not None:
        _check_mask(mask, query, (*batch_shape, n_q, n_k))
    if bias is not None:
        _check_bias(bias, query, (*batch_shape, n_q, n_k))
    # Half precision computes the scores in float32 (as SDPA does inside).
    compute_dtype = torch.promote_types(query.dtype, torch.float32)
    scale = _check_scale(scale, d_k, compute_dtype)
    dropout_p = check_real("dropout_p", dropout_p)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")

    # SDPA's is_causal aligns top-left; ours aligns bottom-right. They agree when
    # n_q == n_k, and then SDPA's causal kernel needs no mask at all.
    sdpa_causal = (
        is_causal and mask is None and bias is None and n_q == n_k and not return_weights
    )
    if is_causal and not sdpa_causal:
        causal = causal_mask(n_q, n_k, device=query.device)  # (n_q, n_k)
        mask = causal if mask is None else mask & causal

    if mask is not None:
        if mask.dim() < 2:  # SDPA indexes the mask's last two dimensions
            mask = mask.reshape((1,) * (2 - mask.dim()) + tuple(mask.shape))
        # What a mask excludes must not reach the result, whatever it holds (inf,
        # NaN): `where`, never a product (0 * NaN is NaN). A query with no allowed
        # key attends everywhere to a zero query (finite numbers, finite
        # gradients) and its output is set to zero after.
        has_key = mask.any(dim=-1, keepdim=True)  # (..., n_q, 1)
        used = mask.any(dim=-2).unsqueeze(-1)  # (..., n_k, 1): some query sees key
        query = torch.where(has_key, query, 0.0)
        key, value = torch.where(used, key, 0.0), torch.where(used, value, 0.0)
        mask = torch.where(has_key, mask, True)  # mask | ~has_key, in one step

    if not return_weights:
        attn_mask = mask
        if bias is not None:  # SDPA adds a float mask to the scaled scores
            attn_mask = bias.to(query.dtype)
            if attn_mask.dim() < 2:  # SDPA indexes the mask's last two dimensions
                attn_mask = attn_mask.reshape((1,) * (2 - bias.dim()) + tuple(bias.shape))
            if mask is not None:
                attn_mask = torch.where(mask, attn_mask, float("-inf"))
        # SDPA's fused CPU kernel takes 4-D inputs only: 3-D ones would fall back to
        # its math path, which stores the (n_q, n_k) weights. A heads axis of one
        # keeps the memory linear in the length.
        three_d = query.dim() == 3 and key.dim() == 3 and value.dim() == 3
        if three_d:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if attn_mask is not None and attn_mask.dim() == 3:
                attn_mask = attn_mask.unsqueeze(1)
        output = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale,
            is_causal=sdpa_causal,
        )
        if three_d:
            output = output.squeeze(1)
        return output if mask is None else torch.where(has_key, output, 0.0)

    # The scale goes on the query before the product: (q k^T) * scale can
    # overflow in half precision where (scale * q) k^T does not.
    scaled_query = query.to(compute_dtype) * scale
    scores = scaled_query @ key.to(compute_dtype).transpose(-2, -1)  # (..., n_q, n_k)
    if bias is not None:
        scores = scores + bias.to(compute_dtype)
    if mask is not None:
        scores = torch.where(mask, scores, float("-inf"))
    weights = scores.softmax(dim=-1)  # (..., n_q, n_k), in float32 or wider
    if mask is not None:
        weights = torch.where(has_key, weights, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    output = weights @ value.to(compute_dtype)  # (..., n_q, d_v)
    return output.to(query.dtype), weights.to(query.dtype)


def _check_scale(scale: object, d_k: int, compute_dtype: torch.dtype) -> float:
    """Return the scale: 1/sqrt(d_k) by default, else ``scale`` if it is usable."""
    if scale is None:
        return 1.0 / math.sqrt(d_k)
    scale = check_real("scale", scale)
    largest = torch.finfo(compute_dtype).max
    if abs(scale) > largest:
        raise ValueError(
            f"scale must be at most {largest:.3g} in magnitude for {compute_dtype} "
            f"scores, got {scale}"
        )
    return scale


def _check_inputs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> tuple[int, ...]:
    """Check query, key and value against each other; return the broadcast batch shape."""
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        check_tensor(name, tensor, min_dim=2)
        check_floating(name, tensor)
    for name, tensor in (("key", key), ("value", value)):
        if tensor.dtype != query.dtype:
            raise TypeError(f"{name} must have query's dtype {query.dtype}, got {tensor.dtype}")
        if tensor.device != query.device:
            raise ValueError(
                f"{name} must be on query's device {query.device}, got {tensor.device}"
            )
    if key.shape[-1] != query.shape[-1]:
        raise ValueError(
            f"key must have query's feature size d_k={query.shape[-1]} in its last dimension, "
            f"got key of shape {tuple(key.shape)} for query of shape {tuple(query.shape)}"
        )
    if query.shape[-1] == 0:
        raise ValueError(
            f"query and key must have at least one feature (d_k >= 1), "
            f"got query of shape {tuple(query.shape)}"
        )
    if value.shape[-2] != key.shape[-2]:
        raise ValueError(
            f"value must have one row per key (n_k={key.shape[-2]}), "
            f"got value of shape {tuple(value.shape)} for key of shape {tuple(key.shape)}"
        )
    batch_shape = broadcast_shape(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    if batch_shape is None:
        raise ValueError(
            "the leading (batch) dimensions of query, key and value must broadcast, got "
            f"{tuple(query.shape[:-2])}, {tuple(key.shape[:-2])} and {tuple(value.shape[:-2])}"
        )
    return batch_shape


def _check_bias(bias: object, query: torch.Tensor, expected: tuple[int, ...]) -> None:
    """Check that ``bias`` is a floating tensor broadcastable to ``expected``."""
    bias = check_tensor("bias", bias)
    if not bias.is_floating_point():
        raise TypeError(
            f"bias must be a floating-point tensor added to the scores, got dtype "
            f"{bias.dtype}; a bool tensor is a mask: pass it as mask"
        )
    if bias.device != query.device:
        raise ValueError(f"bias must be on query's device {query.device}, got {bias.device}")
    if broadcast_shape(bias.shape, expected) != expected:
        raise ValueError(
            f"bias must broadcast to (..., n_q, n_k) = {expected}, got shape {tuple(bias.shape)}"
        )


def _check_mask(mask: object, query: torch.Tensor, expected: tuple[int, ...]) -> None:
    """Check that ``mask`` is a bool tensor broadcastable to ``expected``."""
    mask = check_bool_mask("mask", mask)
    if mask.device != query.device:
        raise ValueError(f"mask must be on query's device {query.device}, got {mask.device}")
    if broadcast_shape(mask.shape, expected) != expected:
        raise ValueError(
            f"mask must broadcast to (..., n_q, n_k) = {expected}, got shape {tuple(mask.shape)}"
        )
