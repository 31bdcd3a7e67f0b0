"""Tests of tinyformer.MultiHeadAttention: equal to torch.nn.MultiheadAttention,
the split and merge of heads, masks, dropout, devices, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tinyformer import MultiHeadAttention, causal_mask, mask_to_torch, padding_mask

F64 = torch.float64


def pair(d_model=16, n_heads=4, dtype=F64, **kwargs):
    """A PyTorch module and our copy of it."""
    torch_attention = nn.MultiheadAttention(
        d_model, n_heads, batch_first=True, dtype=dtype, **kwargs
    )
    return torch_attention, MultiHeadAttention.from_torch(torch_attention)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3), n_q=st.integers(1, 6), n_k=st.integers(1, 6),
    n_heads=st.sampled_from([1, 2, 4]), bias=st.booleans(),
    kdim=st.sampled_from([None, 3, 8]), vdim=st.sampled_from([None, 5, 8]),
    seed=st.integers(0, 2**16),
)
def test_equal_to_pytorch_on_random_shapes(batch, n_q, n_k, n_heads, bias, kdim, vdim, seed):
    torch.manual_seed(seed)
    torch_attention, ours = pair(8, n_heads, bias=bias, kdim=kdim, vdim=vdim)
    query = torch.randn(batch, n_q, 8, dtype=F64)
    key = torch.randn(batch, n_k, kdim or 8, dtype=F64)
    value = torch.randn(batch, n_k, vdim or 8, dtype=F64)
    lengths = torch.randint(1, n_k + 1, (batch,))
    key_mask = padding_mask(lengths, n_k)  # every query keeps a key
    expected, expected_weights = torch_attention(
        query, key, value, key_padding_mask=mask_to_torch(key_mask),
        need_weights=True, average_attn_weights=False,
    )
    output, weights = ours(query, key, value, key_mask=key_mask, need_weights=True)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(ours(query, key, value, key_mask=key_mask), expected)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_equal_to_pytorch_with_a_causal_mask_and_padding(dtype):
    torch.manual_seed(0)
    torch_attention, ours = pair(32, 4, dtype=dtype)
    x = torch.randn(3, 7, 32, dtype=dtype)
    key_mask = padding_mask([7, 5, 2], 7)
    expected, _ = torch_attention(
        x, x, x, attn_mask=mask_to_torch(causal_mask(7)),
        key_padding_mask=mask_to_torch(key_mask),
    )
    torch.testing.assert_close(ours(x, key_mask=key_mask, is_causal=True), expected)
    torch.testing.assert_close(
        ours(x, mask=causal_mask(7), key_mask=key_mask), expected
    )


def test_the_same_parameter_count_as_pytorch_and_as_one_wide_head():
    torch_attention, ours = pair(64, 8, bias=True)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in torch_attention.parameters())
    assert count == sum(p.numel() for p in MultiHeadAttention(64, 1).parameters())
    assert count == 4 * 64 * 64 + 4 * 64


def test_each_head_attends_on_its_own_slice():
    # Head h must see features h*d_head:(h+1)*d_head of every token. Merging with a
    # view and no transpose (the classic bug) mixes tokens, so it must differ.
    torch.manual_seed(1)
    ours = MultiHeadAttention(8, 2, bias=False, dtype=F64)
    x = torch.randn(1, 5, 8, dtype=F64)
    output, weights = ours(x, need_weights=True)
    q = x @ ours.q_proj.weight.T  # (1, 5, 8)
    k = x @ ours.k_proj.weight.T
    for h in range(2):
        part = slice(4 * h, 4 * h + 4)
        scores = q[..., part] @ k[..., part].transpose(-2, -1) / 2.0  # sqrt(4)
        torch.testing.assert_close(weights[:, h], scores.softmax(-1))
    heads = weights @ (x @ ours.v_proj.weight.T).view(1, 5, 2, 4).transpose(1, 2)
    right = heads.transpose(1, 2).reshape(1, 5, 8) @ ours.out_proj.weight.T
    wrong = heads.reshape(1, 5, 8) @ ours.out_proj.weight.T  # view without transpose
    torch.testing.assert_close(output, right)
    assert not torch.allclose(output, wrong)


def test_self_attention_is_permutation_equivariant():
    torch.manual_seed(2)
    ours = MultiHeadAttention(16, 4, dtype=F64)
    x = torch.randn(2, 6, 16, dtype=F64)
    order = torch.randperm(6)
    torch.testing.assert_close(ours(x)[:, order], ours(x[:, order]))


@settings(max_examples=25, deadline=None)
@given(n_q=st.integers(1, 7), n_k=st.integers(1, 7), n_heads=st.sampled_from([1, 2, 4]),
       seed=st.integers(0, 2**16))
def test_permutations_move_queries_and_leave_memory_order_unseen(n_q, n_k, n_heads, seed):
    """Permuting the queries permutes the outputs; permuting the keys with their
    values (and their key mask) changes nothing."""
    torch.manual_seed(seed)
    ours = MultiHeadAttention(8, n_heads, kdim=5, vdim=5, dtype=F64)
    query, memory = torch.randn(2, n_q, 8, dtype=F64), torch.randn(2, n_k, 5, dtype=F64)
    key_mask = padding_mask(torch.randint(1, n_k + 1, (2,)), n_k)
    output = ours(query, memory, memory, key_mask=key_mask)
    rows, keys = torch.randperm(n_q), torch.randperm(n_k)
    moved = ours(query[:, rows], memory[:, keys], memory[:, keys], key_mask=key_mask[:, keys])
    torch.testing.assert_close(moved, output[:, rows])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 8), n_heads=st.sampled_from([1, 2, 4]), seed=st.integers(0, 2**16),
       cut=st.integers(1, 7))
def test_causal_self_attention_leaks_nothing_from_the_future(n, n_heads, seed, cut):
    """Under is_causal, changing tokens from position `cut` on (to anything finite:
    real tokens, not padding garbage) leaves the outputs before it unchanged, and
    no gradient flows back to them."""
    cut = min(cut, n - 1)
    torch.manual_seed(seed)
    ours = MultiHeadAttention(8, n_heads, dtype=F64)
    x = torch.randn(2, n, 8, dtype=F64, requires_grad=True)
    output = ours(x, is_causal=True)
    changed = x.detach().clone()
    changed[:, cut:] = 1e3 * torch.randn_like(changed[:, cut:])
    torch.testing.assert_close(ours(changed, is_causal=True)[:, :cut], output[:, :cut])
    output[:, :cut].sum().backward()
    assert (x.grad[:, cut:] == 0).all()
    assert (x.grad[:, :cut] != 0).any()


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       extra=st.integers(0, 4), causal=st.booleans(), seed=st.integers(0, 2**16))
def test_padding_to_any_length_leaves_real_tokens_unchanged(lengths, extra, causal, seed):
    """The same sequences padded to two lengths (with garbage in the padding) give
    the same outputs on their real tokens."""
    torch.manual_seed(seed)
    ours = MultiHeadAttention(8, 2, dtype=F64)
    short_len = max(lengths)
    x = torch.randn(len(lengths), short_len + extra, 8, dtype=F64)
    long_mask = padding_mask(lengths, short_len + extra)
    x = torch.where(long_mask[..., None], x, torch.tensor(float("inf"), dtype=F64))
    short = ours(x[:, :short_len], key_mask=padding_mask(lengths, short_len), is_causal=causal)
    long = ours(x, key_mask=long_mask, is_causal=causal)
    real = padding_mask(lengths, short_len)
    torch.testing.assert_close(long[:, :short_len][real], short[real])


def test_padded_keys_change_nothing_and_fully_masked_rows_are_zero():
    torch.manual_seed(3)
    ours = MultiHeadAttention(16, 4, bias=False, dtype=F64)
    x = torch.randn(2, 6, 16, dtype=F64)
    key_mask = padding_mask([6, 3], 6)
    changed = x.clone()
    changed[1, 3:] = float("nan")  # padding garbage
    output = ours(x, key_mask=key_mask)
    torch.testing.assert_close(ours(changed, key_mask=key_mask)[1, :3], output[1, :3])
    empty = torch.zeros(2, 6, dtype=torch.bool)
    torch.testing.assert_close(ours(x, key_mask=empty), torch.zeros_like(x))


def test_dropout_acts_only_in_training():
    torch.manual_seed(4)
    ours = MultiHeadAttention(16, 4, dropout=0.5)
    x = torch.randn(2, 6, 16)
    ours.eval()
    torch.testing.assert_close(ours(x), ours(x))
    ours.train()
    assert not torch.allclose(ours(x), ours(x))


def test_from_torch_keeps_device_dtype_and_mode():
    torch_attention = nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.bfloat16)
    torch_attention.eval()
    ours = MultiHeadAttention.from_torch(torch_attention)
    assert ours.q_proj.weight.dtype == torch.bfloat16 and not ours.training


def test_runs_on_the_meta_device_and_in_bfloat16():
    meta = MultiHeadAttention(16, 4, device="meta")
    x = torch.randn(2, 5, 16, device="meta")
    assert meta(x, key_mask=torch.ones(2, 5, dtype=torch.bool, device="meta")).shape == (
        2, 5, 16
    )
    torch.manual_seed(5)
    ours = MultiHeadAttention(16, 4, dtype=torch.bfloat16)
    x = torch.randn(2, 5, 16, dtype=torch.bfloat16)
    output = ours(x, key_mask=padding_mask([5, 0], 5), need_weights=True)[0]
    assert output.dtype == torch.bfloat16 and torch.isfinite(output).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bfloat16_matches_float64():
    torch.manual_seed(6)
    _, ours = pair(64, 4)
    x = torch.randn(2, 33, 64, dtype=F64)
    key_mask = padding_mask([33, 20], 33)
    expected = ours(x, key_mask=key_mask, is_causal=True)
    fast = ours.to("cuda", torch.bfloat16)
    output = fast(x.to("cuda", torch.bfloat16), key_mask=key_mask.cuda(), is_causal=True)
    torch.testing.assert_close(output.double().cpu(), expected, atol=5e-2, rtol=5e-2)


def test_compiles_once_for_every_length():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    ours = MultiHeadAttention(16, 4)
    compiled = torch.compile(ours, backend=counter, fullgraph=True, dynamic=True)
    for n in range(3, 13):
        x = torch.randn(2, n, 16)
        key_mask = padding_mask(torch.tensor([n, n - 1]), n)
        torch.testing.assert_close(compiled(x, key_mask=key_mask), ours(x, key_mask=key_mask))
    assert counter.frame_count <= 2


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: MultiHeadAttention(10, 4), ValueError,
         "n_heads must divide d_model, got d_model=10 and n_heads=4"),
        (lambda: MultiHeadAttention(8, 0), ValueError, "n_heads must be at least 1, got 0"),
        (lambda: MultiHeadAttention(8, 2, dropout=1.0), ValueError, "dropout must be in"),
        (lambda: MultiHeadAttention.from_torch(nn.Linear(2, 2)), TypeError,
         "module must be a torch.nn.MultiheadAttention, got Linear"),
        (lambda: MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2)), ValueError,
         "batch_first=True"),
    ],
)
def test_bad_construction_is_named(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_bad_inputs_are_named():
    ours = MultiHeadAttention(8, 2, kdim=6, vdim=6)
    x, memory = torch.randn(2, 5, 8), torch.randn(2, 7, 6)
    with pytest.raises(ValueError, match=r"query must be 3-D \(batch, length, features\)"):
        ours(torch.randn(5, 8), memory)
    with pytest.raises(ValueError, match=r"query must have 8 features .* got shape \(2, 5, 7\)"):
        ours(torch.randn(2, 5, 7), memory)
    with pytest.raises(ValueError, match=r"key must have 6 features \(the module's kdim\)"):
        ours(x, torch.randn(2, 7, 8), memory)
    with pytest.raises(ValueError, match="same batch size, got 2, 3 and 3"):
        ours(x, torch.randn(3, 7, 6))
    with pytest.raises(ValueError, match=r"value must have one token per key \(n_k=7\)"):
        ours(x, memory, torch.randn(2, 6, 6))
    with pytest.raises(ValueError, match=r"key_mask must have shape \(batch, n_k\) = \(2, 7\)"):
        ours(x, memory, key_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"key_mask must be a bool .* got dtype torch\.float32"):
        ours(x, memory, key_mask=torch.ones(2, 7))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        ours(x, memory, mask=torch.zeros(5, 7))
    with pytest.raises(ValueError, match=r"broadcast to .* \(2, 2, 5, 7\), got .*\(5, 6\)"):
        ours(x, memory, mask=torch.ones(5, 6, dtype=torch.bool))


def test_a_bias_per_head_reaches_each_heads_scores():
    from tinyformer import alibi_bias

    torch.manual_seed(9)
    ours = MultiHeadAttention(16, 4, dtype=F64)
    x = torch.randn(2, 6, 16, dtype=F64)
    bias = alibi_bias(4, 6, dtype=F64)
    _, weights = ours(x, bias=bias, need_weights=True)
    q = ours.q_proj(x).view(2, 6, 4, 4).transpose(1, 2)
    k = ours.k_proj(x).view(2, 6, 4, 4).transpose(1, 2)
    expected = (q @ k.transpose(-2, -1) / 2.0 + bias).softmax(-1)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(ours(x, bias=bias), ours(x, bias=bias, need_weights=True)[0])
    with pytest.raises(ValueError, match=r"bias must broadcast to .* \(2, 4, 6, 6\)"):
        ours(x, bias=torch.zeros(3, 6, 6, dtype=F64))
