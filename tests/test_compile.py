"""The library under torch.compile and torch.export: one compilation for every
sequence length, no graph break, and the same numbers as eager mode.

The compile counts use dynamo's CompileCounter backend, which records each graph
without generating code, so these tests are fast; `benchmarks/attention.py
--compile` times the real (inductor) compilation.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch.export import Dim, export

from tinyformer import causal_mask, dot_product_attention, padding_mask

LENGTHS = range(5, 17)  # twelve sequence lengths


def padded(query, key, value, lengths):
    mask = padding_mask(lengths, key.shape[-2])[:, None, None, :]  # (batch, 1, 1, n)
    return dot_product_attention(query, key, value, mask)


def padded_with_weights(query, key, value, lengths):
    mask = padding_mask(lengths, key.shape[-2])[:, None, None, :]
    return dot_product_attention(query, key, value, mask, return_weights=True)


def causal(query, key, value, lengths):
    mask = causal_mask(query.shape[-2], key.shape[-2])  # (n, n) on 4-D inputs
    return dot_product_attention(query, key, value, mask)


def key_padding_1d(query, key, value, lengths):
    mask = padding_mask(lengths[:1], key.shape[-2])[0]  # (n,): one mask for all
    return dot_product_attention(query, key, value, mask)


def unmasked(query, key, value, lengths):
    return dot_product_attention(query, key, value)


def inputs(n, generator, requires_grad=False):
    shape = (2, 3, n, 8)  # (batch, heads, n, d_k)
    query, key, value = (
        torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_(
            requires_grad
        )
        for _ in range(3)
    )
    lengths = torch.randint(1, n + 1, (2,), generator=generator)
    return query, key, value, lengths


@pytest.mark.parametrize(
    "function", [padded, padded_with_weights, causal, key_padding_1d, unmasked],
    ids=lambda f: f.__name__,
)
def test_one_compilation_serves_every_length_without_a_graph_break(function):
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(function, backend=counter, fullgraph=True, dynamic=True)
    generator = torch.Generator().manual_seed(0)
    for n in LENGTHS:
        args = inputs(n, generator)
        torch.testing.assert_close(compiled(*args), function(*args))
    assert counter.frame_count <= 2, f"{counter.frame_count} compilations for 12 lengths"


def test_compiled_gradients_equal_eager_ones():
    torch._dynamo.reset()
    compiled = torch.compile(padded, backend="aot_eager", fullgraph=True, dynamic=True)
    generator = torch.Generator().manual_seed(1)
    for n in (6, 9):
        args = inputs(n, generator, requires_grad=True)
        query, key, value, _ = args
        expected = torch.autograd.grad(padded(*args).square().sum(), (query, key, value))
        got = torch.autograd.grad(compiled(*args).square().sum(), (query, key, value))
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b)


def test_exports_with_a_dynamic_length_and_a_padding_mask():
    class Attend(torch.nn.Module):
        def forward(self, query, key, value, lengths):
            mask = padding_mask(lengths, key.shape[-2])[:, None, None, :]
            mask = mask & causal_mask(query.shape[-2], key.shape[-2])
            return dot_product_attention(query, key, value, mask)

    n = Dim("n", min=2, max=1024)
    generator = torch.Generator().manual_seed(2)
    example = inputs(6, generator)
    program = export(Attend(), example, dynamic_shapes=({2: n}, {2: n}, {2: n}, None))
    for length in (3, 11, 40):
        args = inputs(length, generator)
        torch.testing.assert_close(program.module()(*args), Attend()(*args))


def test_a_position_bias_compiles_once_for_every_length():
    from torch._dynamo.testing import CompileCounter

    from tinyformer import alibi_bias

    torch._dynamo.reset()
    counter = CompileCounter()

    def attend(x):
        bias = alibi_bias(2, x.shape[-2], dtype=x.dtype, device=x.device)
        return dot_product_attention(x, x, x, bias=bias, is_causal=True)

    compiled = torch.compile(attend, backend=counter, fullgraph=True, dynamic=True)
    for n in range(3, 15):
        x = torch.randn(1, 2, n, 4)
        torch.testing.assert_close(compiled(x), attend(x))
    assert counter.frame_count <= 2
