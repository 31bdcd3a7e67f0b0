"""Hypothesis strategies for attention inputs, kept in one place for every test."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

sizes = st.integers(min_value=1, max_value=6)
batch_shapes = st.lists(st.integers(min_value=1, max_value=3), min_size=0, max_size=2).map(tuple)


@st.composite
def attention_inputs(draw, *, with_mask: bool = True, dtype: torch.dtype = torch.float64):
    """Draw ``(query, key, value, mask)`` with random shapes and an optional mask.

    The mask is a random bool tensor that broadcasts to ``(*batch, n_q, n_k)``,
    and may contain fully masked rows.
    """
    batch = draw(batch_shapes)
    n_q, n_k, d_k, d_v = draw(sizes), draw(sizes), draw(sizes), draw(sizes)
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    spread = draw(st.sampled_from([0.1, 1.0, 4.0]))  # 4.0: near-one-hot softmax

    def sample(*shape: int) -> torch.Tensor:
        return spread * torch.randn(*shape, generator=generator, dtype=dtype)

    query, key, value = sample(*batch, n_q, d_k), sample(*batch, n_k, d_k), sample(*batch, n_k, d_v)
    mask = None
    if with_mask and draw(st.booleans()):
        # every rank that broadcasts: one switch for all, one row of keys for all,
        # one mask for all, one per query and key, or one per key (padding-style)
        mask_shape = draw(st.sampled_from(
            [(), (n_k,), (n_q, n_k), (*batch, n_q, n_k), (*batch, 1, n_k)]
        ))
        mask = torch.rand(mask_shape, generator=generator) < draw(st.sampled_from([0.3, 0.7]))
    return query, key, value, mask
