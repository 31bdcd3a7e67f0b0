"""Attention at long lengths (chapter 12): exact attention in linear memory, and the
approximations that cut its quadratic cost.

Exact attention compares every query with every key: ``n_q * n_k`` scores, in time
and, when they are stored, in memory. :func:`chunked_attention` computes the same
result block by block with the *online softmax* (a running maximum and a rescaled
running sum), so it never holds more than one block of scores, in the forward pass
and in the backward pass, which recomputes the blocks (as FlashAttention does).

The others change what is computed, each trading error for cost:

- :func:`sliding_window_attention`: each query sees a window of nearby keys (sparse).
- :func:`recurrent_attention`: segments in turn, each also seeing the previous
  segment's keys and values, cached without gradient (Transformer-XL's recurrence).
- :func:`pooled_attention`: keys and values averaged over groups of positions
  (downsampling).
- :func:`low_rank_attention`: keys and values projected along the length to ``r``
  rows (Linformer).
- :func:`random_feature_attention`: the softmax kernel written as a dot product of
  positive random features, at a cost linear in length (Performer).

All take batch-first ``(..., n, d)`` tensors, heads in the leading dimensions.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F

from ._checks import check_int, check_tensor
from .attention import _check_inputs, _check_mask, _check_scale, dot_product_attention


def chunked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    is_causal: bool = False,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Exact attention, block by block, in memory linear in the length.

    For each block of ``chunk_size`` queries the keys are visited in blocks of
    ``chunk_size``. A running maximum ``m`` of each query's scores, a running sum
    ``l`` of ``exp(score - m)`` and a running output are rescaled by
    ``exp(m_old - m_new)`` whenever the maximum grows, so the result is the
    softmax over all keys without ever holding a query's full row of scores. The
    backward pass recomputes each block's weights from the saved log-sum-exp
    instead of storing them. The result equals
    :func:`~tinyformer.dot_product_attention`'s to round-off, masks and queries
    with no allowed key (zeros, never NaN) included.

    Args:
        query, key, value, mask, scale: as :func:`~tinyformer.dot_product_attention`'s
            (mask: bool, **True = may attend**).
        is_causal: each query sees the keys up to its own position, the queries
            being the *last* ``n_q`` positions (bottom-right, like
            :func:`~tinyformer.causal_mask`); blocks above the diagonal are skipped.
        chunk_size: the number of queries, and of keys, in a block. Peak memory
            grows like ``n_q * chunk_size``, not ``n_q * n_k``.

    Shape:
        - query: ``(..., n_q, d_k)``; key: ``(..., n_k, d_k)``; value: ``(..., n_k, d_v)``
        - mask: broadcastable to ``(..., n_q, n_k)``
        - output: ``(..., n_q, d_v)``

    A Python loop runs over the blocks: ``torch.compile`` unrolls it, one graph per
    number of blocks. Half-precision inputs are computed in float32 block by block.

    Example:
        >>> query, key = torch.randn(3, 1000, 16), torch.randn(3, 1000, 16)
        >>> value = torch.randn(3, 1000, 8)
        >>> from tinyformer import dot_product_attention
        >>> exact = dot_product_attention(query, key, value)
        >>> ours = chunked_attention(query, key, value, chunk_size=64)
        >>> torch.allclose(ours, exact, atol=1e-6)
        True
    """
    batch_shape = _check_inputs(query, key, value)
    n_q, n_k = query.shape[-2], key.shape[-2]
    if mask is not None:
        _check_mask(mask, query, (*batch_shape, n_q, n_k))
        mask = mask.expand(*batch_shape, n_q, n_k)  # a view: no copy
    compute_dtype = torch.promote_types(query.dtype, torch.float32)
    scale = _check_scale(scale, query.shape[-1], compute_dtype)
    _check_bool("is_causal", is_causal)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    query = query.expand(*batch_shape, *query.shape[-2:])  # expand's backward sums
    key = key.expand(*batch_shape, *key.shape[-2:])
    value = value.expand(*batch_shape, *value.shape[-2:])
    output: torch.Tensor = _ChunkedAttention.apply(
        query, key, value, mask, scale, is_causal, chunk_size
    )
    return output


def _blocks(n_q: int, n_k: int, chunk: int, causal: bool):
    """The (query block, key block) pairs to visit: those with an allowed key."""
    offset = n_k - n_q  # bottom-right: query i sees key j when j <= i + offset
    for i0 in range(0, n_q, chunk):
        i1 = min(i0 + chunk, n_q)
        last_key = i1 - 1 + offset if causal else n_k - 1
        yield i0, i1, [(j0, min(j0 + chunk, n_k)) for j0 in range(0, last_key + 1, chunk)]


def _allowed(
    mask: torch.Tensor | None, causal: bool, rows: tuple[int, int], cols: tuple[int, int],
    offset: int, device: torch.device,
) -> torch.Tensor | None:
    """The block's mask, ``(..., i1 - i0, j1 - j0)``, or None if every key is allowed."""
    (i0, i1), (j0, j1) = rows, cols
    allowed = None if mask is None else mask[..., i0:i1, j0:j1]
    if causal and j1 - 1 > i0 + offset:  # the block crosses the diagonal
        i = torch.arange(i0, i1, device=device)[:, None]
        j = torch.arange(j0, j1, device=device)
        causal_block = j <= i + offset
        allowed = causal_block if allowed is None else allowed & causal_block
    return allowed


class _ChunkedAttention(torch.autograd.Function):
    """Forward and backward of exact attention, one block of scores at a time."""

    @staticmethod
    def forward(
        ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
        mask: torch.Tensor | None, scale: float, causal: bool, chunk: int,
    ) -> torch.Tensor:
        dtype = torch.promote_types(query.dtype, torch.float32)
        n_q, n_k = query.shape[-2], key.shape[-2]
        output = query.new_zeros((*query.shape[:-1], value.shape[-1]))
        # log-sum-exp of each query's allowed scores; +inf where it has no key
        lse = torch.full(query.shape[:-1], float("inf"), dtype=dtype, device=query.device)
        for i0, i1, key_blocks in _blocks(n_q, n_k, chunk, causal):
            q = query[..., i0:i1, :].to(dtype) * scale
            top = torch.full(q.shape[:-1], float("-inf"), dtype=dtype, device=q.device)
            total = torch.zeros_like(top)  # sum of exp(score - top)
            acc = q.new_zeros((*q.shape[:-1], value.shape[-1]))  # sum of exp(.) * value
            for j0, j1 in key_blocks:
                scores = q @ key[..., j0:j1, :].to(dtype).transpose(-2, -1)
                v = value[..., j0:j1, :].to(dtype)
                allowed = _allowed(mask, causal, (i0, i1), (j0, j1), n_k - n_q, q.device)
                if allowed is not None:
                    # where, never a product: masked keys may hold inf or NaN
                    scores = torch.where(allowed, scores, float("-inf"))
                    v = torch.where(allowed.any(dim=-2).unsqueeze(-1), v, 0.0)
                new_top = torch.maximum(top, scores.amax(dim=-1))
                # a row with no allowed key so far keeps a reference of 0: no inf - inf
                ref = torch.where(new_top == float("-inf"), 0.0, new_top)
                weights = torch.exp(scores - ref.unsqueeze(-1))  # masked: exp(-inf) = 0
                rescale = torch.exp(top - ref)  # the old sums were relative to `top`
                total = total * rescale + weights.sum(dim=-1)
                acc = acc * rescale.unsqueeze(-1) + weights @ v
                top = new_top
            has_key = total > 0
            out = acc / torch.where(has_key, total, 1.0).unsqueeze(-1)
            output[..., i0:i1, :] = torch.where(has_key.unsqueeze(-1), out, 0.0)
            ref = torch.where(has_key, top, 0.0)
            lse[..., i0:i1] = torch.where(has_key, ref + torch.log(total), float("inf"))
        ctx.save_for_backward(query, key, value, output, lse)
        ctx.mask, ctx.scale, ctx.causal, ctx.chunk = mask, scale, causal, chunk
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        query, key, value, output, lse = ctx.saved_tensors
        mask, scale, causal, chunk = ctx.mask, ctx.scale, ctx.causal, ctx.chunk
        dtype = lse.dtype
        n_q, n_k = query.shape[-2], key.shape[-2]
        grad_q = torch.zeros(query.shape, dtype=dtype, device=query.device)
        grad_k = torch.zeros(key.shape, dtype=dtype, device=key.device)
        grad_v = torch.zeros(value.shape, dtype=dtype, device=value.device)
        # d(loss)/d(score_ij) = w_ij (dO_i . v_j - dO_i . o_i): the second term per row
        row_dot = (grad_output.to(dtype) * output.to(dtype)).sum(dim=-1)  # (..., n_q)
        for i0, i1, key_blocks in _blocks(n_q, n_k, chunk, causal):
            has_key = torch.isfinite(lse[..., i0:i1]).unsqueeze(-1)
            q = torch.where(has_key, query[..., i0:i1, :].to(dtype), 0.0) * scale
            grad_out = grad_output[..., i0:i1, :].to(dtype)
            row_lse = lse[..., i0:i1].unsqueeze(-1)
            for j0, j1 in key_blocks:
                k, v = key[..., j0:j1, :].to(dtype), value[..., j0:j1, :].to(dtype)
                scores = q @ k.transpose(-2, -1)
                allowed = _allowed(mask, causal, (i0, i1), (j0, j1), n_k - n_q, q.device)
                if allowed is not None:
                    scores = torch.where(allowed, scores, float("-inf"))
                    used = allowed.any(dim=-2).unsqueeze(-1)
                    k, v = torch.where(used, k, 0.0), torch.where(used, v, 0.0)
                weights = torch.exp(scores - row_lse)  # recomputed, never stored
                grad_v[..., j0:j1, :] += weights.transpose(-2, -1) @ grad_out
                grad_scores = weights * (grad_out @ v.transpose(-2, -1) - row_dot[
                    ..., i0:i1, None])
                grad_q[..., i0:i1, :] += (grad_scores @ k) * scale
                grad_k[..., j0:j1, :] += grad_scores.transpose(-2, -1) @ q
        return (grad_q.to(query.dtype), grad_k.to(key.dtype), grad_v.to(value.dtype),
                None, None, None, None)


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def _self_attention_inputs(
    name: str, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    scale: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, torch.dtype]:
    """Checked query, key and value with one key per query, broadcast to one batch
    shape and in their compute dtype (float32 for half precision); the scale; and
    the dtype to return."""
    batch_shape = _check_inputs(query, key, value)
    if key.shape[-2] != query.shape[-2]:
        raise ValueError(
            f"{name} needs one key per query (self-attention, n_q == n_k), got "
            f"query of shape {tuple(query.shape)} and key of shape {tuple(key.shape)}"
        )
    dtype = query.dtype
    compute_dtype = torch.promote_types(dtype, torch.float32)
    scale = _check_scale(scale, query.shape[-1], compute_dtype)
    query, key, value = (x.expand(*batch_shape, *x.shape[-2:]).to(compute_dtype)
                         for x in (query, key, value))
    return query, key, value, scale, dtype


def _in_blocks(x: torch.Tensor, block: int, n_blocks: int) -> torch.Tensor:
    """``(..., n, d)`` zero-padded to ``n_blocks * block`` rows, reshaped to
    ``(..., n_blocks, block, d)``."""
    x = F.pad(x, (0, 0, 0, n_blocks * block - x.shape[-2]))
    return x.reshape(*x.shape[:-2], n_blocks, block, x.shape[-1])


def _windows(x: torch.Tensor, block: int, n_blocks: int, before: int, after: int) -> torch.Tensor:
    """For each block of ``block`` positions, the rows from ``before`` positions
    ahead of it to ``after`` past it (zeros off the ends): ``(..., n_blocks, span, d)``."""
    span = before + block + after
    padded = F.pad(x, (0, 0, before, n_blocks * block - x.shape[-2] + after))
    return padded.unfold(-2, span, block).transpose(-2, -1)  # a view, no copy


def _blocked_softmax(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor,
    scale: float, n: int, dtype: torch.dtype,
) -> torch.Tensor:
    """Attention of each block of queries ``(..., n_blocks, block, d)`` to its own
    keys and values ``(..., n_blocks, span, d)``; returns the first ``n`` rows."""
    scores = (query * scale) @ keys.transpose(-2, -1)  # (..., n_blocks, block, span)
    weights = torch.where(allowed, scores, float("-inf")).softmax(dim=-1)
    output = weights @ values  # (..., n_blocks, block, d_v)
    return output.flatten(-3, -2)[..., :n, :].to(dtype)


def sliding_window_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    window: int,
    is_causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Local attention: query ``i`` sees the keys ``j`` with ``|i - j| <= window``
    (``i - window <= j <= i`` when causal), computed in blocks.

    The queries are cut into blocks of ``window`` positions; a block's keys are the
    ones within ``window`` of it, so the scores take ``n * (3 window)`` numbers
    (``n * 2 window`` causal), linear in the length, instead of ``n * n``. Equal to
    :func:`~tinyformer.dot_product_attention` with the band mask; exact attention
    when ``window >= n - 1``.

    Args:
        query, key, value, scale: as :func:`~tinyformer.dot_product_attention`'s,
            with one key per query (self-attention).
        window: how many positions a query sees on each side (before it only,
            when causal).
        is_causal: see only the keys before, up to the query's own position.

    Shape:
        - query, key: ``(..., n, d_k)``; value: ``(..., n, d_v)``
        - output: ``(..., n, d_v)``

    Example:
        >>> x = torch.randn(2, 100, 8)
        >>> sliding_window_attention(x, x, x, window=4).shape
        torch.Size([2, 100, 8])
    """
    query, key, value, scale, dtype = _self_attention_inputs(
        "sliding_window_attention", query, key, value, scale)
    window = check_int("window", window, minimum=0)
    _check_bool("is_causal", is_causal)
    n = query.shape[-2]
    block = max(1, min(window, n))
    n_blocks = -(-n // block)
    after = 0 if is_causal else window
    keys = _windows(key, block, n_blocks, window, after)  # (..., n_blocks, span, d_k)
    values = _windows(value, block, n_blocks, window, after)
    i = torch.arange(n_blocks * block, device=query.device).view(n_blocks, block, 1)
    j = (torch.arange(n_blocks, device=query.device) * block - window).view(-1, 1, 1)
    j = j + torch.arange(keys.shape[-2], device=query.device)  # (n_blocks, 1, span)
    allowed = (j >= i - window) & (j <= i + after) & (j >= 0) & (j < n)
    return _blocked_softmax(_in_blocks(query, block, n_blocks), keys, values, allowed,
                            scale, n, dtype)


def recurrent_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    segment_length: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Transformer-XL's recurrence: the sequence is read in segments, and each
    segment's queries see, causally, their own segment's keys and the whole
    previous segment's, whose keys and values are a cached memory without gradient.

    Query ``i`` of segment ``s = i // segment_length`` sees the keys ``j`` with
    ``s * segment_length - segment_length <= j <= i``. The forward pass equals
    :func:`~tinyformer.dot_product_attention` with that mask; the backward pass
    differs, as in Transformer-XL: no gradient flows into the previous segment
    through the memory (it is detached), so training memory and time stay those of
    one segment. In a stack of layers the memory of each layer is the previous
    segment's states at that layer, so what a token can reach grows by a segment
    per layer.

    Args:
        query, key, value, scale: as :func:`sliding_window_attention`'s.
        segment_length: the number of positions in a segment.

    Shape:
        - query, key: ``(..., n, d_k)``; value: ``(..., n, d_v)``
        - output: ``(..., n, d_v)``

    Example:
        >>> x = torch.randn(2, 100, 8)
        >>> recurrent_attention(x, x, x, segment_length=16).shape
        torch.Size([2, 100, 8])
    """
    query, key, value, scale, dtype = _self_attention_inputs(
        "recurrent_attention", query, key, value, scale)
    segment = check_int("segment_length", segment_length, minimum=1)
    n = query.shape[-2]
    n_segments = -(-n // segment)
    current = [_in_blocks(x, segment, n_segments) for x in (key, value)]
    # The memory: the previous segment, detached (zeros before the first segment).
    memory = [_windows(x.detach(), segment, n_segments, segment, -segment)
              for x in (key, value)]
    keys, values = (torch.cat(pair, dim=-2) for pair in zip(memory, current, strict=True))
    i = torch.arange(n_segments * segment, device=query.device).view(n_segments, segment, 1)
    j = (torch.arange(n_segments, device=query.device) * segment - segment).view(-1, 1, 1)
    j = j + torch.arange(2 * segment, device=query.device)  # (n_segments, 1, 2 segment)
    allowed = (j <= i) & (j >= 0)
    return _blocked_softmax(_in_blocks(query, segment, n_segments), keys, values, allowed,
                            scale, n, dtype)


def pooled_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    pool: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Downsampling: the keys and the values are averaged over groups of ``pool``
    consecutive positions, and every query attends to the ``ceil(n_k / pool)``
    group means.

    A group mean stands for all the keys of its group, so its score gets
    ``log(group size)`` added: exact attention when the keys of every group are
    equal, and the plain formula otherwise (every full group gets the same
    constant, which the softmax ignores; only a shorter last group is corrected).
    ``pool=1`` is exact attention. Not causal: a group mixes later positions in.

    Args:
        query, key, value, scale: as :func:`~tinyformer.dot_product_attention`'s.
        pool: how many consecutive keys (and values) make one group.

    Shape:
        - query: ``(..., n_q, d_k)``; key: ``(..., n_k, d_k)``; value: ``(..., n_k, d_v)``
        - output: ``(..., n_q, d_v)``; the scores are ``(..., n_q, ceil(n_k / pool))``

    Example:
        >>> query, memory = torch.randn(2, 10, 8), torch.randn(2, 100, 8)
        >>> pooled_attention(query, memory, memory, pool=8).shape
        torch.Size([2, 10, 8])
    """
    batch_shape = _check_inputs(query, key, value)
    pool = check_int("pool", pool, minimum=1)
    dtype, n_k = query.dtype, key.shape[-2]
    compute_dtype = torch.promote_types(dtype, torch.float32)
    scale = _check_scale(scale, query.shape[-1], compute_dtype)
    n_groups = -(-n_k // pool)
    sizes = torch.full((n_groups,), pool, dtype=compute_dtype, device=query.device)
    sizes[-1] = n_k - (n_groups - 1) * pool  # the last group may be shorter
    key, value = (_in_blocks(x.to(compute_dtype), pool, n_groups).sum(dim=-2)
                  / sizes.unsqueeze(-1) for x in (key, value))  # (..., n_groups, d)
    scores = (query.to(compute_dtype) * scale) @ key.transpose(-2, -1)
    weights = (scores + sizes.log()).softmax(dim=-1)  # (..., n_q, n_groups)
    output = weights @ value
    return output.expand(*batch_shape, *output.shape[-2:]).to(dtype)


def low_rank_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    projection: torch.Tensor,
    *,
    value_projection: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Linformer: the keys and the values are projected along the length to ``r``
    rows, ``K' = E K`` and ``V' = F V``, and the queries attend to those ``r``.

    The scores take ``n_q * r`` numbers instead of ``n_q * n_k``. ``E`` (and
    ``F``, which defaults to ``E``, Linformer's shared projection) is a learned
    ``(r, n_k)`` matrix, so the length is fixed by the model. A projection that
    selects ``n_k`` rows in order (the identity) gives exact attention; a random one
    does not approach it as ``r`` grows: the projection must be learned (chapter 12).

    Args:
        query, key, value, scale: as :func:`~tinyformer.dot_product_attention`'s.
        projection: ``E``, the projection of the keys along the length.
        value_projection: ``F``, the projection of the values; ``None`` uses ``E``.

    Shape:
        - query: ``(..., n_q, d_k)``; key: ``(..., n_k, d_k)``; value: ``(..., n_k, d_v)``
        - projection, value_projection: ``(r, n_k)``, or broadcastable
          ``(..., r, n_k)`` (one per head)
        - output: ``(..., n_q, d_v)``

    Example:
        >>> x = torch.randn(2, 100, 8)
        >>> low_rank_attention(x, x, x, torch.randn(16, 100) / 10).shape
        torch.Size([2, 100, 8])
    """
    _check_inputs(query, key, value)
    n_k = key.shape[-2]
    projections = {"projection": projection}
    if value_projection is not None:
        projections["value_projection"] = value_projection
    for name, matrix in projections.items():
        matrix = check_tensor(name, matrix, min_dim=2)
        if matrix.dtype != query.dtype or matrix.device != query.device:
            raise TypeError(
                f"{name} must have query's dtype {query.dtype} and device {query.device}, "
                f"got {matrix.dtype} on {matrix.device}"
            )
        if matrix.shape[-1] != n_k:
            raise ValueError(
                f"{name} must be (r, n_k) with n_k={n_k} columns, one per key, "
                f"got shape {tuple(matrix.shape)}"
            )
    value_projection = projection if value_projection is None else value_projection
    if value_projection.shape[-2] != projection.shape[-2]:
        raise ValueError(
            f"value_projection must have projection's {projection.shape[-2]} rows, got "
            f"shape {tuple(value_projection.shape)}"
        )
    output = dot_product_attention(  # to the r projected keys
        query, projection @ key, value_projection @ value, scale=scale)
    return cast(torch.Tensor, output)  # without return_weights: one tensor


def random_features(
    n_features: int,
    d_k: int,
    *,
    orthogonal: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The random directions ``W`` of :func:`random_feature_attention`: rows drawn
    from the standard normal, or (``orthogonal=True``, Performer's choice) blocks of
    ``d_k`` orthogonal rows with the lengths of normal draws, which lowers the
    variance of the estimate.

    Shape:
        - output: ``(n_features, d_k)``

    Example:
        >>> W = random_features(6, 4, generator=torch.Generator().manual_seed(0))
        >>> W.shape, torch.allclose((W[:4] @ W[:4].T).triu(1), torch.zeros(4, 4), atol=1e-5)
        (torch.Size([6, 4]), True)
    """
    n_features = check_int("n_features", n_features, minimum=1)
    d_k = check_int("d_k", d_k, minimum=1)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    # Drawn on the CPU in float64 with the generator, then moved: reproducible anywhere.
    gaussian = torch.randn(n_features, d_k, generator=generator, dtype=torch.float64)
    if not orthogonal:
        return gaussian.to(device=device, dtype=dtype)
    blocks = []
    for start in range(0, n_features, d_k):
        square = torch.randn(d_k, d_k, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(square)
        q = q * torch.sign(torch.diagonal(r))  # a uniformly random rotation
        blocks.append(q.T[: n_features - start])
    lengths = gaussian.norm(dim=-1, keepdim=True)  # each row: a normal draw's length
    return (torch.cat(blocks) * lengths).to(device=device, dtype=dtype)


def random_feature_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    features: torch.Tensor,
    *,
    is_causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Performer's positive random features: ``exp(q . k)`` is the mean over random
    directions ``w`` of ``phi_w(q) phi_w(k)`` with ``phi_w(x) = exp(w . x - |x|^2 / 2)``,
    so attention is ``phi(Q) (phi(K)^T V)`` divided by ``phi(Q) (phi(K)^T 1)``,
    computed right to left at a cost linear in the length.

    The features are positive, so the estimated weights are too, and the error
    falls like ``1 / sqrt(m)`` with the number ``m`` of features. ``scale`` is split
    between the queries and the keys (each times ``sqrt(scale)``). Causal: each
    query's sums run over the keys up to its own position (prefix sums, bottom-right
    as :func:`~tinyformer.causal_mask`).

    Args:
        query, key, value, scale: as :func:`~tinyformer.dot_product_attention`'s.
        features: the directions ``W``, from :func:`random_features`.
        is_causal: each query sees the keys up to its own position.

    Shape:
        - query: ``(..., n_q, d_k)``; key: ``(..., n_k, d_k)``; value: ``(..., n_k, d_v)``
        - features: ``(m, d_k)``, or ``(..., m, d_k)`` one set per head
        - output: ``(..., n_q, d_v)``

    Example:
        >>> x = torch.randn(2, 100, 8) / 2
        >>> W = random_features(64, 8, generator=torch.Generator().manual_seed(0))
        >>> random_feature_attention(x, x, x, W).shape
        torch.Size([2, 100, 8])
    """
    batch_shape = _check_inputs(query, key, value)
    features = check_tensor("features", features, min_dim=2)
    if features.shape[-1] != query.shape[-1] or not features.is_floating_point():
        raise ValueError(
            f"features must be a float (m, d_k) tensor with d_k={query.shape[-1]}, got "
            f"shape {tuple(features.shape)} and dtype {features.dtype}"
        )
    if features.device != query.device:
        raise ValueError(f"features must be on query's device {query.device}, "
                         f"got {features.device}")
    _check_bool("is_causal", is_causal)
    dtype = query.dtype
    compute_dtype = torch.promote_types(dtype, torch.float32)
    scale = _check_scale(scale, query.shape[-1], compute_dtype)
    root = scale**0.5
    features = features.to(compute_dtype)
    # log phi(x) = w . x - |x|^2 / 2 - log(m) / 2, before the stabilising shifts
    q_log = _log_features(query.to(compute_dtype) * root, features)  # (..., n_q, m)
    k_log = _log_features(key.to(compute_dtype) * root, features)  # (..., n_k, m)
    # A constant per query cancels in the ratio; for the keys one constant for all.
    q_phi = torch.exp(q_log - q_log.amax(dim=-1, keepdim=True))
    k_phi = torch.exp(k_log - k_log.amax(dim=(-2, -1), keepdim=True))
    value = value.to(compute_dtype)
    if not is_causal:
        numerator = q_phi @ (k_phi.transpose(-2, -1) @ value)  # (..., n_q, d_v)
        denominator = q_phi @ k_phi.sum(dim=-2).unsqueeze(-1)  # (..., n_q, 1)
    else:
        n_q, n_k = query.shape[-2], key.shape[-2]
        if n_q > n_k:
            raise ValueError(f"is_causal needs n_q <= n_k, got n_q={n_q}, n_k={n_k}")
        # running sums of phi(k_j) v_j^T and of phi(k_j), read at each query's key
        kv = torch.cumsum(k_phi.unsqueeze(-1) * value.unsqueeze(-2), dim=-3)
        k_sum = torch.cumsum(k_phi, dim=-2)
        kv, k_sum = kv[..., n_k - n_q:, :, :], k_sum[..., n_k - n_q:, :]
        numerator = (q_phi.unsqueeze(-2) @ kv).squeeze(-2)
        denominator = (q_phi * k_sum).sum(dim=-1, keepdim=True)
    output = numerator / denominator
    return output.expand(*batch_shape, *output.shape[-2:]).to(dtype)


def _log_features(x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    m = features.shape[-2]
    return (x @ features.transpose(-2, -1) - (x * x).sum(dim=-1, keepdim=True) / 2
            - 0.5 * torch.log(torch.tensor(float(m), dtype=x.dtype, device=x.device)))
