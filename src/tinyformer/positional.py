"""Where each token sits (chapter 7): attention alone is blind to order.

Four ways to tell it, each in the form the chapter derives:

- **sinusoidal** (Vaswani et al., 2017): add ``PE[p]``, whose pair ``(2i, 2i+1)``
  is ``(sin p w_i, cos p w_i)`` with ``w_i = base^(-2i/d)``; ``PE[p + k]`` is
  ``PE[p]`` turned by one 2×2 rotation per pair, the same for every ``p``;
- **learned**: add row ``p`` of a trained table (it knows no position past its
  last row);
- **rotary** (RoPE, Su et al., 2021): turn each pair ``(2i, 2i+1)`` of the queries
  and keys by the angle ``p w_i`` (the same pairs and frequencies), so that the
  score ``q . k`` depends on the two positions only through their difference;
- **ALiBi** (Press et al., 2022): add ``-slope_h * distance`` to the scores of
  head ``h``.

Angles are computed in float32 (in float64 for float64 tensors) and the results
returned in the dtype asked for, so that half precision rounds once, at the end.
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import (
    broadcast_shape,
    check_dropout,
    check_floating,
    check_int,
    check_real,
    check_tensor,
)

__all__ = [
    "LearnedPositionalEmbedding",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "alibi_bias",
    "alibi_slopes",
    "rotary_embedding",
    "sinusoidal_encoding",
]


# --- sinusoidal ------------------------------------------------------------------


def sinusoidal_encoding(
    n_positions: int,
    d_model: int,
    *,
    base: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The sinusoidal position encoding of the Transformer paper, one row per position.

    ``PE[p, 2i] = sin(p / base^(2i/d_model))`` and
    ``PE[p, 2i+1] = cos(p / base^(2i/d_model))``: sines and cosines interleaved, the
    paper's layout (some libraries put all sines first, then all cosines; that is a
    permutation of the features, not the same tensor). Every value lies in
    ``[-1, 1]``, and ``PE[p + k]`` is ``PE[p]`` turned by a fixed rotation per pair.

    Args:
        n_positions: how many positions, ``0 ... n_positions - 1`` (an int, or a size
            read off a tensor's shape, symbolic under ``torch.compile``).
        d_model: the number of features; must be even (sines and cosines in pairs).
        base: the wavelengths run geometrically from ``2 pi`` towards ``2 pi base``;
            positive.
        device: where to make the encoding.
        dtype: a floating-point dtype; defaults to torch's default dtype. The angles
            are computed in float32 (float64 when ``dtype`` is float64).

    Shape:
        - output: ``(n_positions, d_model)``

    Example:
        >>> pe = sinusoidal_encoding(3, 4)
        >>> pe.shape
        torch.Size([3, 4])
        >>> pe[0]  # position 0: sin 0 = 0 and cos 0 = 1 in every pair
        tensor([0., 1., 0., 1.])
    """
    n_positions = check_int("n_positions", n_positions)
    d_model = _check_even("d_model", d_model)
    base = _check_base(base)
    dtype = _check_dtype(dtype)
    compute = torch.promote_types(dtype, torch.float32)
    positions = torch.arange(n_positions, device=device, dtype=compute)
    return _sinusoids(positions, d_model, base).to(dtype)


def _sinusoids(positions: torch.Tensor, d_model: int, base: float) -> torch.Tensor:
    """``(..., n)`` positions in a float dtype -> ``(..., n, d_model)`` interleaved sin/cos."""
    angles = positions[..., None] * _frequencies(d_model, base, positions)  # (..., n, d/2)
    # stack then flatten interleaves: (sin_0, cos_0, sin_1, cos_1, ...)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


def _frequencies(d: int, base: float, like: torch.Tensor) -> torch.Tensor:
    """``w_i = base^(-2i/d)`` for ``i = 0 ... d/2 - 1``, on ``like``'s device and dtype."""
    exponents = torch.arange(0, d, 2, device=like.device, dtype=like.dtype) / d  # 2i/d
    return torch.pow(base, -exponents)  # (d/2,)


class SinusoidalPositionalEncoding(nn.Module):
    """Add the sinusoidal encoding to a sequence of embeddings, then dropout.

    The encoding is computed for the length of each input, on its device: no table
    of a fixed maximum length, so any length works (and, under
    ``torch.compile(dynamic=True)``, one compilation serves every length). The
    paper multiplies the token embeddings by ``sqrt(d_model)`` before this step;
    that belongs to the embedding, not here.

    Args:
        d_model: the number of features; must be even.
        base: as in :func:`sinusoidal_encoding`.
        dropout: probability of zeroing each element of the sum (active only in
            ``train()`` mode); the paper uses 0.1.

    Shape:
        - x: ``(..., n, d_model)``, e.g. ``(batch, n, d_model)``
        - output: same as ``x``, same dtype and device

    Example:
        >>> encode = SinusoidalPositionalEncoding(8)
        >>> x = torch.zeros(2, 5, 8)
        >>> torch.equal(encode(x), sinusoidal_encoding(5, 8).expand(2, 5, 8))
        True
    """

    def __init__(self, d_model: int, *, base: float = 10000.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.d_model = _check_even("d_model", d_model)
        self.base = _check_base(base)
        self.dropout = nn.Dropout(check_dropout("dropout", dropout))

    def forward(self, x: torch.Tensor, *, offset: int = 0) -> torch.Tensor:
        """Add ``PE[offset : offset + n]`` to ``x`` (``offset``: the position of ``x``'s
        first token, for a decoder that feeds one new token at a time)."""
        x = _check_features("x", x, self.d_model)
        offset = check_int("offset", offset)
        compute = torch.promote_types(x.dtype, torch.float32)
        positions = torch.arange(x.shape[-2], device=x.device, dtype=compute) + offset
        encoded = x.to(compute) + _sinusoids(positions, self.d_model, self.base)
        return self.dropout(encoded.to(x.dtype))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, base={self.base}"


# --- learned ---------------------------------------------------------------------


class LearnedPositionalEmbedding(nn.Module):
    """Add a learned vector per position (row ``p`` of a table) to the embeddings.

    The table has ``max_positions`` rows and nothing beyond: a longer sequence is an
    error, not a silent wrap-around. (Its rows start as ``nn.Embedding``'s do,
    standard normal.)

    Args:
        max_positions: the number of rows, the longest sequence it can encode.
        d_model: the number of features.
        dropout: probability of zeroing each element of the sum (active only in
            ``train()`` mode).
        device: where to make the table.
        dtype: the table's dtype.

    Shape:
        - x: ``(..., n, d_model)`` with ``n <= max_positions``, e.g. ``(batch, n, d_model)``
        - output: same as ``x``, same dtype and device (the table's rows are cast
          to ``x``'s dtype)

    Example:
        >>> embed = LearnedPositionalEmbedding(16, 8)
        >>> x = torch.zeros(2, 5, 8)
        >>> torch.equal(embed(x)[1], embed.embedding.weight[:5])
        True
    """

    def __init__(
        self,
        max_positions: int,
        d_model: int,
        *,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.max_positions = check_int("max_positions", max_positions, minimum=1)
        self.d_model = check_int("d_model", d_model, minimum=1)
        self.embedding = nn.Embedding(
            self.max_positions, self.d_model, device=device, dtype=dtype
        )
        self.dropout = nn.Dropout(check_dropout("dropout", dropout))

    def forward(self, x: torch.Tensor, *, offset: int = 0) -> torch.Tensor:
        """Add rows ``offset ... offset + n - 1`` of the table to ``x``."""
        x = _check_features("x", x, self.d_model)
        offset = check_int("offset", offset)
        table = self.embedding.weight
        if x.device != table.device:
            raise ValueError(f"x must be on the table's device {table.device}, got {x.device}")
        n = x.shape[-2]
        end = offset + n
        longest = self.max_positions
        if torch.compiler.is_compiling() or isinstance(end, torch.SymInt):
            # A symbolic length under torch.compile/export: a check on the symbol, no
            # graph break. Its message is a constant: formatting the length would
            # specialise it, and torch 2.11's dynamo refuses a closure there.
            torch._check(
                end <= longest,
                lambda: "x is longer than the table's max_positions (from its offset)",
            )
        elif end > longest:
            raise ValueError(
                f"x has {n} positions from offset {offset}, up to position {end - 1}, but "
                f"the table holds max_positions={longest} (positions 0 to {longest - 1}): "
                "a learned table has no row for a later position"
            )
        positions = torch.arange(n, device=x.device) + offset
        return self.dropout(x + self.embedding(positions).to(x.dtype))

    def extra_repr(self) -> str:
        return f"max_positions={self.max_positions}, d_model={self.d_model}"


# --- rotary ----------------------------------------------------------------------


def rotary_embedding(
    x: torch.Tensor, *, positions: torch.Tensor | None = None, base: float = 10000.0
) -> torch.Tensor:
    """Rotate each feature pair of queries or keys by an angle proportional to position.

    Pair ``(x_2i, x_2i+1)`` of the token at position ``p`` turns by the angle
    ``p w_i``, ``w_i = base^(-2i/d)`` (the pairs and frequencies of
    :func:`sinusoidal_encoding`), counter-clockwise as in the RoPE paper::

        x'_2i   = x_2i cos(p w_i) - x_2i+1 sin(p w_i)
        x'_2i+1 = x_2i sin(p w_i) + x_2i+1 cos(p w_i)

    Rotations keep lengths, and a query turned by ``p w_i`` dotted with a key turned
    by ``p' w_i`` is the plain query dotted with the key turned by ``(p' - p) w_i``:
    after this step, scores depend on positions only through ``p - p'``. Apply it to
    the queries and the keys (per head, after the projections), never to the values.

    Args:
        x: queries or keys, floating point, with an even number of features.
        positions: the position of each token, integer or float; defaults to
            ``0 ... n - 1``. Pass ``offset + arange(n)`` for new tokens after a cache
            of ``offset`` old ones. It broadcasts against ``x``'s leading dimensions
            (aligned on the right), so for ``(batch, heads, n, d)`` give ``(n,)`` or
            ``(batch, 1, n)``.
        base: as in :func:`sinusoidal_encoding`; positive.

    Shape:
        - x: ``(..., n, d)``, ``d`` even
        - positions: ``(n,)`` or any shape ``(..., n)`` broadcastable to ``x.shape[:-1]``
        - output: same as ``x``, same dtype (angles and products in float32, or
          float64 for float64 ``x``)

    Example:
        >>> q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # (n=2, d=2)
        >>> rotary_embedding(q, base=1.0)  # position 1 turns by 1 radian
        tensor([[1.0000, 0.0000],
                [0.5403, 0.8415]])
    """
    x = check_tensor("x", x, min_dim=2)
    check_floating("x", x)
    n, d = x.shape[-2], x.shape[-1]
    if d % 2 != 0 or d < 2:
        raise ValueError(
            "x must have an even number of features (at least 2) in its last dimension, "
            f"rotated in pairs, got shape {tuple(x.shape)}"
        )
    base = _check_base(base)
    compute = torch.promote_types(x.dtype, torch.float32)
    if positions is None:
        angles_at = torch.arange(n, device=x.device, dtype=compute)
    else:
        _check_positions(positions, x)
        angles_at = positions.to(compute)
    angles = angles_at[..., None] * _frequencies(d, base, angles_at)  # (..., n, d/2)
    cos, sin = angles.cos(), angles.sin()
    pairs = x.to(compute).unflatten(-1, (d // 2, 2))  # (..., n, d/2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    turned = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return turned.flatten(-2).to(x.dtype)


def _check_positions(positions: object, x: torch.Tensor) -> None:
    positions = check_tensor("positions", positions, min_dim=1)
    if positions.dtype == torch.bool or positions.is_complex():
        raise TypeError(
            f"positions must hold integers or real numbers, got dtype {positions.dtype}"
        )
    if positions.device != x.device:
        raise ValueError(f"positions must be on x's device {x.device}, got {positions.device}")
    expected = tuple(x.shape[:-1])
    if positions.shape[-1] != x.shape[-2] or broadcast_shape(positions.shape, expected) != expected:
        raise ValueError(
            f"positions must have one entry per token (n={x.shape[-2]}) in its last "
            f"dimension and broadcast to x's leading dimensions {expected}, "
            f"got shape {tuple(positions.shape)}"
        )


class RotaryEmbedding(nn.Module):
    """:func:`rotary_embedding` as a module (no parameters), for a fixed feature size.

    Args:
        d: the number of features per head; must be even.
        base: as in :func:`sinusoidal_encoding`.

    Shape:
        - x: ``(..., n, d)``, e.g. ``(batch, heads, n, d)``
        - positions: as in :func:`rotary_embedding`
        - output: same as ``x``

    Example:
        >>> rotate = RotaryEmbedding(4)
        >>> q = torch.randn(2, 3, 5, 4)  # (batch, heads, n, d)
        >>> torch.equal(rotate(q), rotary_embedding(q))
        True
    """

    def __init__(self, d: int, *, base: float = 10000.0) -> None:
        super().__init__()
        self.d = _check_even("d", d)
        self.base = _check_base(base)

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Rotate ``x``'s feature pairs by their positions' angles."""
        x = _check_features("x", x, self.d)
        return rotary_embedding(x, positions=positions, base=self.base)

    def extra_repr(self) -> str:
        return f"d={self.d}, base={self.base}"


# --- ALiBi -----------------------------------------------------------------------


def alibi_slopes(
    n_heads: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The ALiBi paper's slope for each head: a geometric sequence from ``2^(-8/n)``.

    For ``n`` heads, ``n`` a power of two, head ``h = 1 ... n`` gets
    ``2^(-8h/n)``: 8 heads get ``1/2, 1/4, ..., 1/256``. Otherwise, with ``c`` the
    largest power of two not above ``n``, the first ``c`` heads get the slopes for ``c``
    heads and the other ``n - c`` take every other slope for ``2c`` heads
    (``2^(-8h/(2c))``, ``h = 1, 3, 5, ...``): the rule of the paper's code.

    Args:
        n_heads: the number of heads, at least 1.
        device: where to make the slopes.
        dtype: a floating-point dtype; defaults to torch's default dtype.

    Shape:
        - output: ``(n_heads,)``

    Example:
        >>> alibi_slopes(4)
        tensor([0.2500, 0.0625, 0.0156, 0.0039])
    """
    n_heads = check_int("n_heads", n_heads, minimum=1)
    return torch.tensor(_slopes(int(n_heads)), device=device, dtype=_check_dtype(dtype))


def _slopes(n: int) -> list[float]:
    closest = 1 << (n.bit_length() - 1)  # the largest power of two <= n
    slopes = [2.0 ** (-8.0 * h / closest) for h in range(1, closest + 1)]
    between = [2.0 ** (-8.0 * h / (2 * closest)) for h in range(1, 2 * closest, 2)]
    return slopes + between[: n - closest]


def alibi_bias(
    n_heads: int,
    n_queries: int,
    n_keys: int | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """ALiBi's additive bias: each head penalises a key linearly in its distance.

    ``bias[h, i, j] = -slope_h * |pos_i - key_j|``, with the slopes of
    :func:`alibi_slopes`. The queries are the *last* ``n_queries`` positions of the
    keys, aligned bottom-right like :func:`tinyformer.causal_mask`: query ``i``
    sits at position ``i + n_keys - n_queries``. The bias is zero on that diagonal
    and falls by ``slope_h`` per step.

    It is *added to the scores* before the softmax (no position is added to the
    embeddings): pass it as ``bias=`` to :func:`tinyformer.dot_product_attention`
    or :class:`tinyformer.MultiHeadAttention`, beside any mask. (PyTorch's
    ``scaled_dot_product_attention`` takes it as a float ``attn_mask``, with
    ``-inf`` where a causal mask forbids.)

    Future keys: the paper's model is causal, and for the keys a query may see
    (``key_j <= pos_i``) this is its bias, ``-slope_h (pos_i - key_j)``. The future
    keys get the symmetric ``-slope_h (key_j - pos_i)``: under a causal mask they
    never reach the result, and without one (an encoder) both directions fall off
    alike, where the one-sided formula would *favour* distant future keys.

    Args:
        n_heads: the number of heads, at least 1.
        n_queries: number of queries (an int, or a size read off a tensor's shape).
        n_keys: number of keys; defaults to ``n_queries``.
        device: where to make the bias.
        dtype: a floating-point dtype; defaults to torch's default dtype (computed
            in float32 or wider, then cast).

    Shape:
        - output: ``(n_heads, n_queries, n_keys)``; broadcasts against scores
          ``(batch, n_heads, n_queries, n_keys)``

    Example:
        >>> alibi_bias(2, 3)[0]  # head 0, slope 1/16
        tensor([[ 0.0000, -0.0625, -0.1250],
                [-0.0625,  0.0000, -0.0625],
                [-0.1250, -0.0625,  0.0000]])
        >>> alibi_bias(2, 1, 4)[0]  # one new query after three cached keys
        tensor([[-0.1875, -0.1250, -0.0625,  0.0000]])
    """
    n_queries = check_int("n_queries", n_queries)
    n_keys = n_queries if n_keys is None else check_int("n_keys", n_keys)
    dtype = _check_dtype(dtype)
    compute = torch.promote_types(dtype, torch.float32)
    slopes = alibi_slopes(n_heads, device=device, dtype=compute)  # (heads,)
    query_position = torch.arange(n_queries, device=device) + (n_keys - n_queries)
    key_position = torch.arange(n_keys, device=device)
    # Negate the integer distance (no -0.0 on the diagonal), then scale per head.
    distance = -(query_position[:, None] - key_position).abs()  # (n_q, n_k), int
    return (slopes[:, None, None] * distance.to(compute)).to(dtype)


# --- checks ----------------------------------------------------------------------


def _check_even(name: str, value: object) -> int:
    value = check_int(name, value, minimum=2)
    if value % 2 != 0:
        raise ValueError(f"{name} must be even (features come in pairs), got {value}")
    return value


def _check_base(base: object) -> float:
    base = check_real("base", base)
    if base <= 0:
        raise ValueError(f"base must be positive, got {base}")
    return base


def _check_dtype(dtype: object) -> torch.dtype:
    if dtype is None:
        return torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype}")
    return dtype


def _check_features(name: str, x: object, d: int) -> torch.Tensor:
    x = check_tensor(name, x, min_dim=2)
    check_floating(name, x)
    if x.shape[-1] != d:
        raise ValueError(
            f"{name} must have {d} features in its last dimension, got shape {tuple(x.shape)}"
        )
    return x
