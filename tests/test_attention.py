"""Tests of tinyformer.dot_product_attention: the formula, PyTorch, masks, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import attention_inputs

from tinyformer import causal_mask, dot_product_attention, padding_mask
from tinyformer._checks import broadcast_shape


def reference_attention(query, key, value, mask=None, scale=None):
    """The formula written out on its own, one query row at a time."""
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = scale * query @ key.transpose(-2, -1)
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    mask = mask.expand_as(scores)
    weights = torch.zeros_like(scores)
    for index in itertools.product(*map(range, scores.shape[:-1])):
        allowed = mask[index]
        if allowed.any():
            weights[index][allowed] = torch.softmax(scores[index][allowed], dim=-1)
    return weights @ value, weights


def randn(*shape, dtype=torch.float64, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device)


# --- the formula ---------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(attention_inputs())
def test_both_paths_equal_the_formula(inputs):
    query, key, value, mask = inputs
    expected_output, expected_weights = reference_attention(query, key, value, mask)
    output, weights = dot_product_attention(query, key, value, mask, return_weights=True)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(output, expected_output)
    torch.testing.assert_close(dot_product_attention(query, key, value, mask), expected_output)


@settings(max_examples=60, deadline=None)
@given(attention_inputs())
def test_equal_to_pytorch_where_every_query_has_a_key(inputs):
    query, key, value, mask = inputs
    if mask is not None:  # SDPA wants a mask of at least 2 dimensions
        n_q, n_k = query.shape[-2], key.shape[-2]
        mask = mask.expand(torch.broadcast_shapes(mask.shape, (n_q, n_k))).clone()
        mask[..., 0] = True  # PyTorch's own answer for an empty row is backend-dependent
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
    for return_weights in (False, True):
        result = dot_product_attention(query, key, value, mask, return_weights=return_weights)
        output = result[0] if return_weights else result
        torch.testing.assert_close(output, expected)


@settings(max_examples=60, deadline=None)
@given(attention_inputs())
def test_weights_are_a_distribution_over_allowed_keys(inputs):
    query, key, value, mask = inputs
    _, weights = dot_product_attention(query, key, value, mask, return_weights=True)
    assert (weights >= 0).all()
    allowed = (
        torch.ones_like(weights, dtype=torch.bool) if mask is None else mask.expand_as(weights)
    )
    has_key = allowed.any(-1)
    sums = weights.sum(-1)
    torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]))
    assert (weights[~allowed] == 0).all(), "a masked key got weight"


@settings(max_examples=60, deadline=None)
@given(attention_inputs())
def test_output_is_a_convex_combination_of_the_values(inputs):
    query, key, value, mask = inputs
    output, weights = dot_product_attention(query, key, value, mask, return_weights=True)
    low = value.min(dim=-2, keepdim=True).values
    high = value.max(dim=-2, keepdim=True).values
    inside = (output >= low - 1e-9) & (output <= high + 1e-9)
    # A fully masked query returns zero, which need not lie between the values.
    has_key = weights.sum(-1, keepdim=True) > 0
    assert (inside | ~has_key).all()


def test_default_scale_is_one_over_sqrt_d_k():
    query, key, value = randn(3, 4, 16), randn(3, 6, 16), randn(3, 6, 5)
    default = dot_product_attention(query, key, value)
    explicit = dot_product_attention(query, key, value, scale=0.25)
    torch.testing.assert_close(default, explicit)
    unscaled = dot_product_attention(query, key, value, scale=1.0)
    torch.testing.assert_close(unscaled, reference_attention(query, key, value, scale=1.0)[0])
    assert not torch.allclose(default, unscaled)


def test_scale_zero_averages_the_values():
    query, key, value = randn(4, 8), randn(5, 8), randn(5, 3)
    output = dot_product_attention(query, key, value, scale=0.0)
    torch.testing.assert_close(output, value.mean(0).expand(4, 3))


def test_a_sharp_query_retrieves_its_key_value():
    key = torch.eye(4, dtype=torch.float64)
    value = torch.arange(8, dtype=torch.float64).reshape(4, 2)
    output = dot_product_attention(key[2:3], key, value, scale=100.0)
    torch.testing.assert_close(output, value[2:3])


def test_swapping_key_value_pairs_leaves_the_output_unchanged():
    query, key, value = randn(2, 3, 4), randn(2, 7, 4), randn(2, 7, 5)
    order = torch.randperm(7)
    torch.testing.assert_close(
        dot_product_attention(query, key, value),
        dot_product_attention(query, key[:, order], value[:, order]),
    )


def test_leading_dimensions_broadcast():
    query, key, value = randn(2, 1, 3, 4), randn(5, 6, 4), randn(5, 6, 2)
    output, weights = dot_product_attention(query, key, value, return_weights=True)
    assert output.shape == (2, 5, 3, 2) and weights.shape == (2, 5, 3, 6)
    torch.testing.assert_close(output, dot_product_attention(query, key, value))


# --- masks ---------------------------------------------------------------------


def test_masked_keys_get_zero_weight_and_do_not_change_the_output():
    query, key, value = randn(2, 4, 8), randn(2, 6, 8), randn(2, 6, 3)
    mask = padding_mask([4, 6])[:, None, :]  # (2, 1, 6)
    output, weights = dot_product_attention(query, key, value, mask, return_weights=True)
    assert (weights[0, :, 4:] == 0).all()
    changed_value, changed_key = value.clone(), key.clone()
    changed_value[0, 4:] = 1e6
    changed_key[0, 4:] = -1e6
    torch.testing.assert_close(
        output, dot_product_attention(query, changed_key, changed_value, mask)
    )


def test_future_tokens_do_not_change_the_past():
    n = 6
    query, key, value = randn(n, 4), randn(n, 4), randn(n, 3)
    mask = causal_mask(n)
    output = dot_product_attention(query, key, value, mask)
    later_key, later_value = key.clone(), value.clone()
    later_key[4:], later_value[4:] = randn(2, 4), randn(2, 3)
    changed = dot_product_attention(query, later_key, later_value, mask)
    torch.testing.assert_close(changed[:4], output[:4])
    assert not torch.allclose(changed[4:], output[4:])


@pytest.mark.parametrize("return_weights", [False, True])
def test_fully_masked_rows_give_zeros_and_zero_gradients_not_nan(return_weights):
    query = randn(2, 3, 4).requires_grad_()
    key, value = randn(2, 5, 4).requires_grad_(), randn(2, 5, 2).requires_grad_()
    mask = torch.ones(2, 3, 5, dtype=torch.bool)
    mask[0, 1] = False
    result = dot_product_attention(query, key, value, mask, return_weights=return_weights)
    output = result[0] if return_weights else result
    assert (output[0, 1] == 0).all()
    if return_weights:
        assert (result[1][0, 1] == 0).all()
    output.square().sum().backward()
    for tensor in (query, key, value):
        assert torch.isfinite(tensor.grad).all()
    assert (query.grad[0, 1] == 0).all()


def test_an_all_false_mask_gives_all_zeros():
    query, key, value = randn(3, 4), randn(5, 4), randn(5, 2)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    assert (dot_product_attention(query, key, value, mask) == 0).all()


# --- dropout, dtypes and devices -----------------------------------------------


@pytest.mark.parametrize("return_weights", [False, True])
def test_dropout_keeps_the_expected_output(return_weights):
    torch.manual_seed(0)
    query, key, value = randn(1, 4), randn(8, 4), randn(8, 3)
    expected = dot_product_attention(query, key, value)
    samples = []
    for _ in range(4000):
        result = dot_product_attention(
            query, key, value, dropout_p=0.5, return_weights=return_weights
        )
        samples.append(result[0] if return_weights else result)
    samples = torch.stack(samples)
    assert not torch.allclose(samples[0], expected), "dropout changed nothing"
    torch.testing.assert_close(samples.mean(0), expected, atol=0.1, rtol=0.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_matches_float64(dtype):
    query, key, value = randn(2, 5, 8), randn(2, 7, 8), randn(2, 7, 4)
    expected = dot_product_attention(query, key, value)
    for return_weights in (False, True):
        result = dot_product_attention(
            query.to(dtype), key.to(dtype), value.to(dtype), return_weights=return_weights
        )
        output = result[0] if return_weights else result
        assert output.dtype == dtype
        torch.testing.assert_close(output.double(), expected, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("return_weights", [False, True])
def test_runs_on_the_meta_device(return_weights):
    meta = torch.device("meta")
    query, key, value = (
        randn(2, 3, 4, device=meta),
        randn(2, 5, 4, device=meta),
        randn(2, 5, 6, device=meta),
    )
    mask = causal_mask(3, 5, device=meta)
    result = dot_product_attention(query, key, value, mask, return_weights=return_weights)
    output = result[0] if return_weights else result
    assert output.device == meta and output.shape == (2, 3, 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bfloat16_matches_the_cpu():
    query, key, value = randn(2, 4, 64, 32), randn(2, 4, 80, 32), randn(2, 4, 80, 32)
    mask = causal_mask(64, 80)
    expected = dot_product_attention(query, key, value, mask)
    cuda = [t.to("cuda", torch.bfloat16) for t in (query, key, value)]
    for return_weights in (False, True):
        result = dot_product_attention(*cuda, mask.cuda(), return_weights=return_weights)
        output = result[0] if return_weights else result
        torch.testing.assert_close(output.double().cpu(), expected, atol=3e-2, rtol=3e-2)


# --- errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (((3, 4), (5, 6), (5, 2)), "key must have query's feature size d_k=4"),
        (((3, 4), (5, 4), (6, 2)), r"value must have one row per key \(n_k=5\)"),
        (((4,), (5, 4), (5, 2)), "query must have at least 2 dimensions"),
        (((2, 3, 4), (3, 5, 4), (3, 5, 2)), "leading .* must broadcast"),
    ],
)
def test_mismatched_shapes_are_named(shapes, message):
    query, key, value = (randn(*shape) for shape in shapes)
    with pytest.raises(ValueError, match=message):
        dot_product_attention(query, key, value)


def test_wrong_types_are_named():
    query, key, value = randn(3, 4), randn(5, 4), randn(5, 2)
    with pytest.raises(TypeError, match=r"query must be a torch.Tensor, got list"):
        dot_product_attention([[1.0]], key, value)
    with pytest.raises(
        TypeError, match=r"key must be a floating-point tensor, got dtype torch.int64"
    ):
        dot_product_attention(query, key.long(), value)
    with pytest.raises(TypeError, match=r"value must have query's dtype torch.float64"):
        dot_product_attention(query, key, value.float())
    with pytest.raises(TypeError, match="scale must be a real number, got str"):
        dot_product_attention(query, key, value, scale="0.5")
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\), got 1.0"):
        dot_product_attention(query, key, value, dropout_p=1.0)


def test_bad_masks_are_named():
    query, key, value = randn(2, 3, 4), randn(2, 5, 4), randn(2, 5, 2)
    with pytest.raises(TypeError, match=r"mask must be a bool tensor .* got dtype torch.float32"):
        dot_product_attention(query, key, value, torch.zeros(3, 5))
    with pytest.raises(
        ValueError, match=r"mask must broadcast to .* \(2, 3, 5\), got shape \(3, 4\)"
    ):
        dot_product_attention(query, key, value, torch.ones(3, 4, dtype=torch.bool))
    # A mask may not enlarge the output: (4, 3, 5) would broadcast, but not to (2, 3, 5).
    with pytest.raises(ValueError, match="mask must broadcast"):
        dot_product_attention(query, key, value, torch.ones(4, 3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be on query's device"):
        dot_product_attention(query, key, value, torch.ones(3, 5, dtype=torch.bool, device="meta"))


@given(st.lists(st.lists(st.integers(0, 3), max_size=4).map(tuple), min_size=1, max_size=3))
def test_broadcast_shape_follows_pytorchs_rule(shapes):
    try:
        expected = tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        expected = None
    assert broadcast_shape(*shapes) == expected


# --- masks of every rank, half precision, garbage at masked positions ---------


@pytest.mark.parametrize("return_weights", [False, True])
@pytest.mark.parametrize(
    ("input_batch", "mask_shape"),
    [
        ((2, 3), ()),  # 0-dim: one switch for everything
        ((2, 3), (6,)),  # one row of keys for every query
        ((2, 3), (4, 6)),
        ((2, 3), (3, 1, 6)),  # per head, padding-style
        ((2, 3), (2, 1, 1, 6)),  # per sequence, padding-style
        ((2, 3), (2, 3, 4, 6)),
        ((2, 1, 3), (2, 1, 3, 4, 6)),  # 5-D inputs and mask
        ((2, 1, 3), (1, 3, 1, 6)),  # 5-D inputs, 4-D padding-style mask
    ],
)
def test_masks_of_every_rank_that_broadcasts(input_batch, mask_shape, return_weights):
    generator = torch.Generator().manual_seed(len(mask_shape))
    query = torch.randn(*input_batch, 4, 5, generator=generator, dtype=torch.float64)
    key = torch.randn(*input_batch, 6, 5, generator=generator, dtype=torch.float64)
    value = torch.randn(*input_batch, 6, 3, generator=generator, dtype=torch.float64)
    mask = torch.rand(mask_shape, generator=generator) < 0.6
    result = dot_product_attention(query, key, value, mask, return_weights=return_weights)
    output = result[0] if return_weights else result
    batch = torch.broadcast_shapes(input_batch, mask_shape[:-2])
    expected, _ = reference_attention(
        query.expand(*batch, 4, 5), key.expand(*batch, 6, 5), value.expand(*batch, 6, 3),
        mask.expand(*batch, 4, 6),
    )
    torch.testing.assert_close(output, expected)


def test_a_mask_with_more_dimensions_than_the_output_is_named():
    query, key, value = randn(3, 4), randn(5, 4), randn(5, 2)
    with pytest.raises(ValueError, match=r"mask must broadcast to .* \(3, 5\)"):
        dot_product_attention(query, key, value, torch.ones(2, 3, 5, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("return_weights", [False, True])
def test_half_precision_at_large_logits_stays_finite_and_accurate(dtype, return_weights):
    # q . k reaches 32 * 32 * 64 = 65,536, past float16's largest number (65,504):
    # the scale must be applied before the product.
    query = torch.full((1, 4, 64), 32.0, dtype=torch.float64)
    key = torch.full((1, 6, 64), 32.0, dtype=torch.float64)
    key[:, ::2] *= 0.99  # unequal scores, far apart after the scale
    value = torch.randn(1, 6, 8, dtype=torch.float64)
    expected = reference_attention(query, key, value)[0]
    result = dot_product_attention(
        query.to(dtype), key.to(dtype), value.to(dtype), return_weights=return_weights
    )
    output = result[0] if return_weights else result
    assert torch.isfinite(output).all()
    torch.testing.assert_close(output.double(), expected, atol=0.05, rtol=0.0)


def opinfo_cases(dtype):
    """PyTorch's own sample inputs for scaled_dot_product_attention (its OpInfo),
    as (query, key, value, bool mask or None); random dropout and float additive
    masks, which we do not take, are left out."""
    common = pytest.importorskip("torch.testing._internal.common_methods_invocations")
    name = "nn.functional.scaled_dot_product_attention"
    [opinfo] = [op for op in common.op_db if op.name == name]
    torch.manual_seed(0)
    for sample in opinfo.sample_inputs("cpu", dtype):
        kwargs = sample.kwargs
        if kwargs.get("dropout_p", 0.0) > 0 or kwargs.get("attn_mask") is not None:
            continue
        query, (key, value) = sample.input, sample.args
        mask = None
        if kwargs.get("is_causal"):  # PyTorch's is_causal is the top-left triangle
            n_q, n_k = query.shape[-2], key.shape[-2]
            mask = torch.ones(n_q, n_k, dtype=torch.bool).tril()
        yield query.detach(), key.detach(), value.detach(), mask


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_pytorchs_own_samples_on_both_paths_are_as_accurate_as_sdpa(dtype):
    """Within three times SDPA's own error against float64, plus a few ulps."""
    cases = list(opinfo_cases(dtype))
    assert len(cases) >= 6
    for query, key, value, mask in cases:
        wide = [t.double() for t in (query, key, value)]
        expected = reference_attention(*wide, mask)[0]
        sdpa = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        sdpa_error = (sdpa.double() - expected).abs().max().item()
        floor = 4 * torch.finfo(dtype).eps * expected.abs().max().item()
        for return_weights in (False, True):
            result = dot_product_attention(query, key, value, mask, return_weights=return_weights)
            output = result[0] if return_weights else result
            error = (output.double() - expected).abs().max().item()
            assert output.dtype == dtype
            assert error <= 3 * sdpa_error + floor, (return_weights, error, sdpa_error)


@pytest.mark.parametrize("return_weights", [False, True])
def test_bfloat16_scores_are_computed_in_float32(return_weights):
    # Inputs in [-9, 9], the range of PyTorch's own samples: scores of size ~100,
    # where bfloat16's 8-bit mantissa alone would err by about 1.
    generator = torch.Generator().manual_seed(3)
    query, key, value = (
        torch.empty(2, 16, 32, dtype=torch.float64).uniform_(-9, 9, generator=generator)
        for _ in range(3)
    )
    expected = reference_attention(query, key, value)[0]
    low = [t.to(torch.bfloat16) for t in (query, key, value)]
    expected_low = reference_attention(*(t.double() for t in low))[0]  # same rounded inputs
    result = dot_product_attention(*low, return_weights=return_weights)
    output = result[0] if return_weights else result
    assert (output.double() - expected_low).abs().max() < 0.05
    assert (output.double() - expected).abs().max() < 0.5 * (expected.abs().max())


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("garbage", [float("nan"), float("inf")])
@pytest.mark.parametrize("return_weights", [False, True])
def test_garbage_at_masked_positions_stays_out_of_outputs_and_gradients(
    garbage, return_weights, device
):
    # Padding: the second sequence has 4 real tokens of 6; its padded keys, values
    # and (fully masked) padded queries hold garbage. On CUDA, SDPA's own kernels.
    n = 6
    dtype = torch.float64 if device == "cpu" else torch.float32
    clean = [randn(2, 2, n, 4, dtype=dtype, device=device),
             randn(2, 2, n, 4, dtype=dtype, device=device),
             randn(2, 2, n, 3, dtype=dtype, device=device)]
    lengths = torch.tensor([6, 4], device=device)
    real = padding_mask(lengths, n)  # (2, n)
    mask = real[:, None, :, None] & real[:, None, None, :]  # (2, 1, n, n)
    dirty = [t.clone() for t in clean]
    for t in dirty:
        t[1, :, 4:] = garbage

    def run(tensors):
        tensors = [t.clone().requires_grad_() for t in tensors]
        result = dot_product_attention(*tensors, mask, return_weights=return_weights)
        output = result[0] if return_weights else result
        gradients = torch.autograd.grad(output.sin().sum(), tensors)
        return output, gradients

    expected_output, expected_gradients = run(clean)
    output, gradients = run(dirty)
    assert torch.isfinite(output).all()
    torch.testing.assert_close(output, expected_output)
    for got, expected, t in zip(gradients, expected_gradients, clean, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected)
        assert (got[1, :, 4:] == 0).all()  # garbage gets no gradient
        assert t.shape == got.shape


@pytest.mark.parametrize("return_weights", [False, True])
def test_both_paths_agree_on_fully_masked_rows_with_garbage(return_weights):
    query, key, value = randn(3, 4), randn(5, 4), randn(5, 2)
    key[2] = float("inf")
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[:, 2] = False  # nobody sees key 2
    mask[1] = False  # query 1 sees nothing
    result = dot_product_attention(query, key, value, mask, return_weights=return_weights)
    output = result[0] if return_weights else result
    assert (output[1] == 0).all() and torch.isfinite(output).all()
    torch.testing.assert_close(output, dot_product_attention(query, key, value, mask))


def test_scale_that_overflows_the_scores_is_named():
    query, key, value = randn(3, 4).float(), randn(5, 4).float(), randn(5, 2).float()
    with pytest.raises(ValueError, match=r"scale must be at most 3.4e\+38 .* got 1e\+39"):
        dot_product_attention(query, key, value, scale=1e39)
    with pytest.raises(ValueError, match="scale must be finite, got inf"):
        dot_product_attention(query, key, value, scale=float("inf"))
    # float64 scores hold it; half precision scores are float32.
    dot_product_attention(query.double(), key.double(), value.double(), scale=1e39)
    with pytest.raises(ValueError, match="scale must be at most"):
        dot_product_attention(query.half(), key.half(), value.half(), scale=1e39)


def test_zero_features_are_named():
    with pytest.raises(ValueError, match=r"at least one feature \(d_k >= 1\)"):
        dot_product_attention(randn(3, 0), randn(5, 0), randn(5, 2))


# --- is_causal -----------------------------------------------------------------


@pytest.mark.parametrize("return_weights", [False, True])
@pytest.mark.parametrize(("n_q", "n_k"), [(5, 5), (3, 7), (6, 4), (1, 5)])
def test_is_causal_equals_the_bottom_right_causal_mask(n_q, n_k, return_weights):
    query, key, value = randn(2, 3, n_q, 4), randn(2, 3, n_k, 4), randn(2, 3, n_k, 5)
    expected = reference_attention(query, key, value, causal_mask(n_q, n_k))
    result = dot_product_attention(query, key, value, is_causal=True,
                                   return_weights=return_weights)
    output = result[0] if return_weights else result
    torch.testing.assert_close(output, expected[0])
    if return_weights:
        torch.testing.assert_close(result[1], expected[1])


@pytest.mark.parametrize("return_weights", [False, True])
def test_is_causal_combines_with_a_mask(return_weights):
    query, key, value = randn(2, 6, 4), randn(2, 6, 4), randn(2, 6, 3)
    padding = padding_mask([6, 4])[:, None, :]  # (2, 1, 6)
    expected = reference_attention(query, key, value, padding & causal_mask(6))[0]
    result = dot_product_attention(query, key, value, padding, is_causal=True,
                                   return_weights=return_weights)
    torch.testing.assert_close(result[0] if return_weights else result, expected)


def test_is_causal_is_not_pytorchs_top_left_when_keys_outnumber_queries():
    query, key, value = randn(3, 4), randn(7, 4), randn(7, 2)
    top_left = F.scaled_dot_product_attention(query, key, value, is_causal=True)
    ours = dot_product_attention(query, key, value, is_causal=True)
    assert not torch.allclose(ours, top_left)
    torch.testing.assert_close(ours[-1], dot_product_attention(query, key, value)[-1])


def test_is_causal_must_be_a_bool():
    with pytest.raises(TypeError, match="is_causal must be a bool, got int"):
        dot_product_attention(randn(3, 4), randn(3, 4), randn(3, 2), is_causal=1)


@pytest.mark.parametrize("return_weights", [False, True])
def test_a_bias_is_added_to_the_scaled_scores_on_both_paths(return_weights):
    torch.manual_seed(7)
    query, key, value = randn(2, 3, 5, 4), randn(2, 3, 6, 4), randn(2, 3, 6, 2)
    bias = randn(3, 5, 6)  # per head, as ALiBi's
    mask = torch.rand(2, 1, 5, 6) > 0.3
    mask[..., 0] = True
    result = dot_product_attention(query, key, value, mask, bias=bias,
                                   return_weights=return_weights)
    output = result[0] if return_weights else result
    scores = query @ key.transpose(-2, -1) / 2.0 + bias  # scale 1/sqrt(4)
    expected = torch.where(mask, scores, float("-inf")).softmax(-1) @ value
    torch.testing.assert_close(output, expected)
    causal = dot_product_attention(query, key, value, bias=bias, is_causal=True,
                                   return_weights=return_weights)
    explicit = dot_product_attention(query, key, value, causal_mask(5, 6), bias=bias,
                                     return_weights=return_weights)
    torch.testing.assert_close(causal, explicit)


def test_alibi_through_the_library_equals_the_scores_written_out():
    from tinyformer import alibi_bias

    torch.manual_seed(8)
    query, key, value = randn(1, 4, 7, 8), randn(1, 4, 7, 8), randn(1, 4, 7, 8)
    bias = alibi_bias(4, 7, dtype=torch.float64)
    output = dot_product_attention(query, key, value, bias=bias, is_causal=True)
    reference = F.scaled_dot_product_attention(
        query, key, value, attn_mask=torch.where(causal_mask(7), bias, float("-inf"))
    )
    torch.testing.assert_close(output, reference)


def test_a_bad_bias_is_named():
    query = randn(2, 5, 4)
    with pytest.raises(TypeError, match="bias must be a floating-point tensor"):
        dot_product_attention(query, query, query, bias=torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"bias must broadcast to \(..., n_q, n_k\)"):
        dot_product_attention(query, query, query, bias=randn(4, 5))


def test_three_dimensional_inputs_get_the_fused_kernel_and_linear_memory():
    from tinyformer.runtime import peak_memory

    n = 2048
    query, key, value = (torch.randn(1, n, 64) for _ in range(3))
    mask = torch.rand(1, n, n) > 0.1
    for m in (None, mask):
        torch.testing.assert_close(dot_product_attention(query, key, value, m),
                                   dot_product_attention(query[:, None], key[:, None],
                                                         value[:, None], m)[:, 0])
    _, peak = peak_memory(lambda: dot_product_attention(query, key, value))
    assert peak < n * n * 4 / 8  # the float32 (n, n) weights would take n * n * 4 bytes
