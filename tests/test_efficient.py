"""Tests of tinyformer.efficient: exact chunked attention (forward, backward, memory)
and the approximations (exact where they should be, error falling with their knob)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyformer import (
    chunked_attention,
    dot_product_attention,
    low_rank_attention,
    pooled_attention,
    random_feature_attention,
    random_features,
    recurrent_attention,
    sliding_window_attention,
)

F64 = torch.float64


def randn(*shape, generator=None, dtype=F64, device="cpu", requires_grad=False):
    x = torch.randn(*shape, generator=generator, dtype=dtype)
    return x.to(device).requires_grad_(requires_grad)


def grads(output, inputs, seed=0):
    direction = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed),
                            dtype=output.dtype)
    return torch.autograd.grad(output, inputs, direction)


def band_mask(n, window, causal):
    i, j = torch.arange(n)[:, None], torch.arange(n)
    return (j >= i - window) & (j <= i + (0 if causal else window))


# --- chunked attention: exact ---------------------------------------------------


@settings(max_examples=40)
@given(n_q=st.integers(1, 40), n_k=st.integers(1, 40), chunk=st.integers(1, 17),
       causal=st.booleans(), masked=st.booleans(), seed=st.integers(0, 2**16))
def test_chunked_attention_equals_exact_attention_forward_and_backward(
    n_q, n_k, chunk, causal, masked, seed
):
    g = torch.Generator().manual_seed(seed)
    q = randn(2, 3, n_q, 4, generator=g, requires_grad=True)
    k = randn(2, 1, n_k, 4, generator=g, requires_grad=True)  # broadcast over heads
    v = randn(1, 3, n_k, 5, generator=g, requires_grad=True)
    mask = torch.rand(2, 1, n_q, n_k, generator=g) > 0.3 if masked else None
    exact = dot_product_attention(q, k, v, mask, is_causal=causal)
    ours = chunked_attention(q, k, v, mask, is_causal=causal, chunk_size=chunk)
    torch.testing.assert_close(ours, exact, rtol=0, atol=1e-12)
    for a, b in zip(grads(ours, (q, k, v)), grads(exact, (q, k, v)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_chunked_attention_passes_gradcheck():
    g = torch.Generator().manual_seed(0)
    inputs = (randn(1, 5, 3, generator=g, requires_grad=True),
              randn(1, 7, 3, generator=g, requires_grad=True),
              randn(1, 7, 2, generator=g, requires_grad=True))
    mask = torch.tensor([True, False, True, True, True, False, True])
    assert torch.autograd.gradcheck(
        lambda q, k, v: chunked_attention(q, k, v, mask, is_causal=True, chunk_size=3),
        inputs,
    )


def test_queries_with_no_key_get_zeros_and_masked_garbage_never_leaks():
    g = torch.Generator().manual_seed(1)
    q, k, v = (randn(2, 9, 4, generator=g, requires_grad=True) for _ in range(3))
    mask = torch.rand(2, 9, 9, generator=g) > 0.5
    mask[0, 4] = False  # a query with no key
    mask[:, :, 6] = False  # a key that no query may see
    k_bad, v_bad = k.detach().clone(), v.detach().clone()
    k_bad[:, 6], v_bad[:, 6] = float("nan"), float("inf")
    k_bad.requires_grad_(), v_bad.requires_grad_()
    out = chunked_attention(q, k_bad, v_bad, mask, chunk_size=4)
    exact = dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, exact, rtol=0, atol=1e-12)
    assert torch.equal(out[0, 4], torch.zeros(4, dtype=F64))
    grad_q, grad_k, grad_v = grads(out, (q, k_bad, v_bad))
    assert all(torch.isfinite(grad).all() for grad in (grad_q, grad_k, grad_v))
    assert torch.equal(grad_q[0, 4], torch.zeros(4, dtype=F64))  # no key: no gradient


def test_chunked_attention_never_saves_a_quadratic_tensor_for_backward():
    n, chunk = 512, 32
    q, k, v = (randn(1, n, 8, requires_grad=True) for _ in range(3))
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        chunked_attention(q, k, v, chunk_size=chunk).sum().backward()
    assert sum(saved) <= 5 * n * 8  # query, key, value, output and one number a row
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        dot_product_attention(q, k, v, return_weights=True)[0].sum().backward()
    assert max(saved) >= n * n  # the explicit formula keeps the weights


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_chunked_attention_in_lower_precision_is_as_accurate_as_the_explicit_formula(dtype):
    g = torch.Generator().manual_seed(2)
    q, k, v = (randn(2, 300, 16, generator=g) * 3 for _ in range(3))
    truth = dot_product_attention(q, k, v, is_causal=True)
    low = [x.to(dtype) for x in (q, k, v)]
    ours = chunked_attention(*low, is_causal=True, chunk_size=64)
    explicit = dot_product_attention(*low, is_causal=True, return_weights=True)[0]
    assert ours.dtype == dtype
    ours_error = (ours.double() - truth).abs().max()
    explicit_error = (explicit.double() - truth).abs().max()
    assert ours_error <= 2 * explicit_error + torch.finfo(dtype).eps


def test_chunked_attention_rejects_bad_input_by_name():
    x = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_attention(x, x, x, chunk_size=0)
    with pytest.raises(TypeError, match="mask"):
        chunked_attention(x, x, x, torch.ones(5, 5))
    with pytest.raises(ValueError, match="mask"):
        chunked_attention(x, x, x, torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="key"):
        chunked_attention(x, torch.randn(2, 5, 3), x)
    with pytest.raises(TypeError, match="is_causal"):
        chunked_attention(x, x, x, is_causal=1)


# --- local and recurrent attention ------------------------------------------------


@settings(max_examples=40)
@given(n=st.integers(1, 30), window=st.integers(0, 35), causal=st.booleans(),
       seed=st.integers(0, 2**16))
def test_sliding_window_attention_equals_the_band_mask(n, window, causal, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (randn(2, 3, n, 4, generator=g, requires_grad=True) for _ in range(3))
    ours = sliding_window_attention(q, k, v, window=window, is_causal=causal)
    exact = dot_product_attention(q, k, v, band_mask(n, window, causal))
    torch.testing.assert_close(ours, exact, rtol=0, atol=1e-12)
    for a, b in zip(grads(ours, (q, k, v)), grads(exact, (q, k, v)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_a_window_as_long_as_the_sequence_is_exact_attention():
    q, k, v = (randn(2, 20, 4) for _ in range(3))
    torch.testing.assert_close(sliding_window_attention(q, k, v, window=19),
                               dot_product_attention(q, k, v), rtol=0, atol=1e-12)
    torch.testing.assert_close(sliding_window_attention(q, k, v, window=19, is_causal=True),
                               dot_product_attention(q, k, v, is_causal=True),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("n, segment", [(1, 1), (10, 3), (24, 8), (7, 20)])
def test_recurrent_attention_sees_its_segment_and_the_previous_one(n, segment):
    q, k, v = (randn(2, n, 4, requires_grad=True) for _ in range(3))
    i, j = torch.arange(n)[:, None], torch.arange(n)
    mask = (j <= i) & (j >= (i // segment - 1) * segment)
    torch.testing.assert_close(recurrent_attention(q, k, v, segment_length=segment),
                               dot_product_attention(q, k, v, mask), rtol=0, atol=1e-12)


def test_no_gradient_flows_into_the_cached_previous_segment():
    n, segment = 12, 4
    q, k, v = (randn(1, n, 4, requires_grad=True) for _ in range(3))
    out = recurrent_attention(q, k, v, segment_length=segment)
    grad_k, grad_v = torch.autograd.grad(out[:, 4:8].sum(), (k, v))  # segment 1
    assert torch.equal(grad_k[:, :4], torch.zeros(1, 4, 4, dtype=F64))  # memory
    assert torch.equal(grad_v[:, :4], torch.zeros(1, 4, 4, dtype=F64))
    assert grad_v[:, 4:8].abs().min() > 0  # its own segment does get a gradient
    i, j = torch.arange(n)[:, None], torch.arange(n)
    mask = (j <= i) & (j >= (i // segment - 1) * segment)
    exact = dot_product_attention(q, k, v, mask)
    exact_grad_v = torch.autograd.grad(exact[:, 4:8].sum(), v)[0]
    assert exact_grad_v[:, :4].abs().min() > 0  # without the detach it would flow


def test_local_attention_rejects_bad_input_by_name():
    x = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="n_q == n_k"):
        sliding_window_attention(x, torch.randn(2, 6, 4), torch.randn(2, 6, 4), window=2)
    with pytest.raises(ValueError, match="window"):
        sliding_window_attention(x, x, x, window=-1)
    with pytest.raises(TypeError, match="window"):
        sliding_window_attention(x, x, x, window=2.5)
    with pytest.raises(ValueError, match="segment_length"):
        recurrent_attention(x, x, x, segment_length=0)


# --- approximations: exact at their limit, better with their knob --------------------


def smooth_sequence(n, d, generator, batch=4):
    """Rows that change slowly along the sequence: neighbours are alike."""
    steps = torch.randn(batch, n, d, generator=generator, dtype=F64) / n**0.5
    return torch.cumsum(steps, dim=1) * 2


def mean_error(approx, exact):
    return (approx - exact).abs().mean().item()


def test_pooling_by_one_is_exact_and_equal_keys_in_a_group_are_exact_too():
    q, k, v = (randn(2, 11, 4) for _ in range(3))
    torch.testing.assert_close(pooled_attention(q, k, v, pool=1),
                               dot_product_attention(q, k, v), rtol=0, atol=1e-12)
    k_equal = k[:, ::3].repeat_interleave(3, dim=1)[:, :11]  # groups of 3, last of 2
    v_equal = v[:, ::3].repeat_interleave(3, dim=1)[:, :11]
    torch.testing.assert_close(pooled_attention(q, k_equal, v_equal, pool=3),
                               dot_product_attention(q, k_equal, v_equal),
                               rtol=0, atol=1e-12)


def test_pooling_error_falls_as_the_groups_shrink_on_a_smooth_sequence():
    g = torch.Generator().manual_seed(3)
    x = smooth_sequence(64, 8, g)
    exact = dot_product_attention(x, x, x)
    errors = [mean_error(pooled_attention(x, x, x, pool=p), exact) for p in (32, 16, 8, 4, 2)]
    assert all(a > b for a, b in itertools.pairwise(errors))
    assert errors[-1] < errors[0] / 4


def test_low_rank_attention_with_the_identity_is_exact():
    q, k, v = (randn(2, 3, 10, 4) for _ in range(3))
    torch.testing.assert_close(low_rank_attention(q, k, v, torch.eye(10, dtype=F64)),
                               dot_product_attention(q, k, v), rtol=0, atol=1e-12)
    separate = low_rank_attention(q, k, v, torch.eye(10, dtype=F64),
                                  value_projection=2 * torch.eye(10, dtype=F64))
    torch.testing.assert_close(separate, 2 * dot_product_attention(q, k, v))


def test_a_learned_low_rank_projection_gets_better_with_rank():
    g = torch.Generator().manual_seed(4)
    x = smooth_sequence(32, 8, g)
    exact = dot_product_attention(x, x, x)
    errors = []
    for rank in (2, 8, 32):
        projection = (torch.randn(rank, 32, generator=g, dtype=F64) / 32).requires_grad_()
        optimizer = torch.optim.Adam([projection], lr=0.02)
        for _ in range(300):
            loss = (low_rank_attention(x, x, x, projection) - exact).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        errors.append(mean_error(low_rank_attention(x, x, x, projection.detach()), exact))
    assert errors[0] > errors[1] > errors[2]


def test_low_rank_attention_rejects_bad_projections_by_name():
    x = torch.randn(2, 10, 4)
    with pytest.raises(ValueError, match=r"projection.*n_k=10"):
        low_rank_attention(x, x, x, torch.randn(3, 9))
    with pytest.raises(TypeError, match=r"projection.*dtype"):
        low_rank_attention(x, x, x, torch.randn(3, 10, dtype=F64))
    with pytest.raises(ValueError, match="value_projection"):
        low_rank_attention(x, x, x, torch.randn(3, 10), value_projection=torch.randn(4, 10))


def test_positive_random_features_estimate_the_softmax_kernel_without_bias():
    g = torch.Generator().manual_seed(5)
    q, k = randn(4, generator=g) / 2, randn(4, generator=g) / 2
    features = random_features(200_000, 4, orthogonal=False, generator=g, dtype=F64)

    def phi(x):
        return torch.exp(features @ x - x @ x / 2)

    estimates = phi(q) * phi(k)  # one estimate of exp(q . k) per direction
    mean, spread = estimates.mean(), estimates.std() / len(estimates) ** 0.5
    assert (estimates > 0).all()
    assert abs(mean - torch.exp(q @ k)) < 5 * spread


def test_orthogonal_features_are_orthogonal_within_a_block_and_reproducible():
    w = random_features(10, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    gram = w[:4] @ w[:4].T
    torch.testing.assert_close(gram - torch.diag(torch.diagonal(gram)),
                               torch.zeros(4, 4, dtype=F64))
    again = random_features(10, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.equal(w, again)


@pytest.mark.parametrize("causal", [False, True])
def test_random_feature_error_falls_with_the_number_of_features(causal):
    g = torch.Generator().manual_seed(6)
    q, k, v = (randn(2, 40, 8, generator=g) / 2 for _ in range(3))
    exact = dot_product_attention(q, k, v, is_causal=causal)
    errors = []
    for m in (8, 64, 512):
        draws = [random_feature_attention(
            q, k, v, random_features(m, 8, generator=torch.Generator().manual_seed(s),
                                     dtype=F64), is_causal=causal) for s in range(4)]
        errors.append(sum(mean_error(d, exact) for d in draws) / len(draws))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < errors[0] / 4  # about 1/sqrt(m): a factor 8 from 8 to 512


def test_causal_random_features_are_the_full_estimate_over_each_prefix():
    g = torch.Generator().manual_seed(7)
    q, k, v = (randn(1, 9, 4, generator=g) for _ in range(3))
    w = random_features(16, 4, generator=g, dtype=F64)
    causal = random_feature_attention(q, k, v, w, is_causal=True)
    for i in range(9):
        prefix = random_feature_attention(q[:, i:i + 1], k[:, :i + 1], v[:, :i + 1], w)
        torch.testing.assert_close(causal[:, i:i + 1], prefix)


def test_random_feature_attention_rejects_bad_features_by_name():
    x = torch.randn(2, 10, 4)
    with pytest.raises(ValueError, match=r"features.*d_k=4"):
        random_feature_attention(x, x, x, torch.randn(8, 3))
    with pytest.raises(ValueError, match="n_features"):
        random_features(0, 4)


# --- every function on any device ---------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda q, k, v: chunked_attention(q, k, v, is_causal=True, chunk_size=3),
    lambda q, k, v: chunked_attention(q, k, v, torch.ones(7, 7, dtype=torch.bool,
                                                          device=q.device), chunk_size=3),
    lambda q, k, v: sliding_window_attention(q, k, v, window=2),
    lambda q, k, v: recurrent_attention(q, k, v, segment_length=3),
    lambda q, k, v: pooled_attention(q, k, v, pool=3),
    lambda q, k, v: low_rank_attention(q, k, v, torch.ones(3, 7, device=q.device)),
    lambda q, k, v: random_feature_attention(
        q, k, v, random_features(5, 4, device=q.device), is_causal=True),
], ids=["chunked_causal", "chunked_mask", "window", "recurrent", "pooled", "low_rank",
        "random_features"])
def test_runs_on_the_meta_device(call):
    meta = torch.device("meta")
    q, k, v = (torch.empty(2, 3, 7, 4, device=meta) for _ in range(3))
    out = call(q, k, v)
    assert out.device == meta and out.shape == (2, 3, 7, 4)
