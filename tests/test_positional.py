"""Tests of tinyformer.positional: the sinusoidal encoding and its rotations, learned
tables, rotary embeddings and ALiBi, against plain loops and the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounter
from torch.export import Dim, export

from tinyformer.masks import causal_mask
from tinyformer.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
    rotary_embedding,
    sinusoidal_encoding,
)

META = torch.device("meta")
LENGTHS = range(5, 17)  # twelve sequence lengths


def randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def frequencies(d, base=10000.0):
    """w_i = 1 / base^(2i/d), as the paper writes it, in float64."""
    return torch.tensor([1.0 / base ** (2 * i / d) for i in range(d // 2)], dtype=torch.float64)


# --- sinusoidal encoding -----------------------------------------------------------


@pytest.mark.parametrize(("n", "d", "base"), [(50, 16, 10000.0), (7, 2, 10000.0), (20, 6, 10.0)])
def test_sinusoidal_encoding_is_the_papers_formula_written_as_a_loop(n, d, base):
    expected = torch.empty(n, d, dtype=torch.float64)
    for p in range(n):
        for i in range(d // 2):
            angle = p / base ** (2 * i / d)
            expected[p, 2 * i], expected[p, 2 * i + 1] = math.sin(angle), math.cos(angle)
    got = sinusoidal_encoding(n, d, base=base, dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_sinusoidal_values_lie_in_minus_one_to_one():
    pe = sinusoidal_encoding(5000, 64)
    assert pe.abs().max() <= 1.0
    assert pe.min() < -0.99 and pe.max() > 0.99  # and they fill the interval


def shift_rotation(k, d, base=10000.0):
    """The block-diagonal matrix R_k with PE[p + k] = PE[p] R_k (rows, as in the book):
    for each pair (sin a, cos a) -> (sin(a + b), cos(a + b)), b = k w_i."""
    rotation = torch.zeros(d, d, dtype=torch.float64)
    for i, w in enumerate(frequencies(d, base)):
        c, s = math.cos(k * w), math.sin(k * w)
        block = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        rotation[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = block
    return rotation


@pytest.mark.parametrize("k", [1, 3, 17])
def test_a_shift_by_k_is_one_rotation_per_frequency_pair_for_every_position(k):
    n, d = 60, 12
    pe = sinusoidal_encoding(n + k, d, dtype=torch.float64)
    rotation = shift_rotation(k, d)
    # one matrix, the same for every position p, maps PE[p] to PE[p + k] ...
    torch.testing.assert_close(pe[:n] @ rotation, pe[k:], rtol=0, atol=1e-12)
    # ... and it is a rotation: orthogonal, determinant one, zero off its 2×2 blocks
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(d, dtype=torch.float64))
    assert torch.linalg.det(rotation).item() == pytest.approx(1.0)
    blocks = torch.block_diag(*[torch.ones(2, 2)] * (d // 2)).bool()
    assert (rotation[~blocks] == 0).all()


def test_the_only_linear_map_from_pe_p_to_pe_p_plus_k_is_that_rotation():
    # With many more positions than features, PE[p] -> PE[p + k] pins down the map:
    # least squares finds it from the encodings alone, and it is R_k.
    n, d, k, base = 200, 8, 5, 50.0  # a small base keeps every frequency well sampled
    pe = sinusoidal_encoding(n + k, d, base=base, dtype=torch.float64)
    solved = torch.linalg.lstsq(pe[:n], pe[k:]).solution
    torch.testing.assert_close(solved, shift_rotation(k, d, base), rtol=0, atol=1e-8)


def test_sinusoidal_dot_product_depends_only_on_the_distance():
    n, d = 80, 16
    pe = sinusoidal_encoding(n, d, dtype=torch.float64)
    for k in (0, 1, 4, 30):
        dots = (pe[: n - k] * pe[k:]).sum(-1)  # PE[p] . PE[p + k] for every p
        expected = torch.cos(k * frequencies(d)).sum()  # sum_i cos(k w_i)
        torch.testing.assert_close(dots, expected.expand_as(dots), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 2e-4), (torch.bfloat16, 8e-3)])
def test_low_precision_encodings_round_the_float64_one(dtype, atol):
    # float32 angles err by about p * 6e-8 radians: 2e-4 at p = 2000
    reference = sinusoidal_encoding(2000, 32, dtype=torch.float64)
    got = sinusoidal_encoding(2000, 32, dtype=dtype)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), reference, rtol=0, atol=atol)


def test_sinusoidal_encoding_takes_default_dtype_device_and_meta():
    assert sinusoidal_encoding(3, 4).dtype == torch.get_default_dtype()
    pe = sinusoidal_encoding(3, 4, device=META, dtype=torch.float16)
    assert pe.device == META and pe.shape == (3, 4) and pe.dtype == torch.float16
    assert sinusoidal_encoding(0, 4).shape == (0, 4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_sinusoidal_module_adds_the_encoding_and_keeps_shape_dtype(dtype):
    x = randn(2, 9, 8).to(dtype)
    encode = SinusoidalPositionalEncoding(8)
    got = encode(x)
    assert got.shape == x.shape and got.dtype == dtype
    expected = x.double() + sinusoidal_encoding(9, 8, dtype=torch.float64)
    tolerance = {torch.bfloat16: 2e-2, torch.float32: 1e-6, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(got.double(), expected, rtol=tolerance, atol=tolerance)
    if dtype == torch.bfloat16:  # x + PE in float32, rounded once
        assert (got == expected.to(dtype)).double().mean() > 0.99
    # unbatched (n, d_model) works too
    torch.testing.assert_close(encode(x[0]), got[0])


def test_sinusoidal_module_offset_continues_the_positions():
    encode = SinusoidalPositionalEncoding(8)
    x = randn(2, 10, 8)
    torch.testing.assert_close(encode(x[:, 6:], offset=6), encode(x)[:, 6:])


def test_sinusoidal_module_runs_on_meta():
    out = SinusoidalPositionalEncoding(8, dropout=0.1)(torch.empty(2, 5, 8, device=META))
    assert out.device == META and out.shape == (2, 5, 8)


def test_positional_dropout_acts_only_in_training():
    x = torch.zeros(4, 50, 8)
    for module in (
        SinusoidalPositionalEncoding(8, dropout=0.5),
        LearnedPositionalEmbedding(50, 8, dropout=0.5),
    ):
        clean = module.eval()(x)
        assert torch.equal(module(x), clean)
        torch.manual_seed(0)
        noisy = module.train()(x)
        zeroed = noisy == 0
        assert 0.4 < zeroed.float().mean() < 0.6
        torch.testing.assert_close(noisy[~zeroed], 2 * clean[~zeroed])  # survivors × 1/(1-p)


# --- learned table -----------------------------------------------------------------


def test_learned_embedding_adds_the_rows_of_its_table():
    embed = LearnedPositionalEmbedding(16, 8).double()
    x = randn(3, 7, 8)
    torch.testing.assert_close(embed(x), x + embed.embedding.weight[:7])
    torch.testing.assert_close(embed(x, offset=4), x + embed.embedding.weight[4:11])


def test_learned_embedding_trains_only_the_rows_it_used():
    embed = LearnedPositionalEmbedding(16, 8)
    embed(torch.randn(2, 5, 8)).square().sum().backward()
    row_norms = embed.embedding.weight.grad.norm(dim=-1)
    assert (row_norms[:5] > 0).all() and (row_norms[5:] == 0).all()


def test_learned_embedding_keeps_dtype_and_runs_on_meta():
    embed = LearnedPositionalEmbedding(16, 8)  # float32 table
    x = randn(2, 5, 8).to(torch.bfloat16)
    assert embed(x).dtype == torch.bfloat16
    with torch.device(META):
        meta_embed = LearnedPositionalEmbedding(16, 8)
    out = meta_embed(torch.empty(2, 5, 8, device=META))
    assert out.device == META and out.shape == (2, 5, 8)


def test_a_sequence_longer_than_the_table_is_named():
    embed = LearnedPositionalEmbedding(10, 8)
    embed(torch.zeros(1, 10, 8))  # exactly max_positions is fine
    with pytest.raises(ValueError, match=r"x has 11 positions .* max_positions=10"):
        embed(torch.zeros(1, 11, 8))
    with pytest.raises(ValueError, match=r"from offset 3, up to position 11, .* max_positions=10"):
        embed(torch.zeros(1, 9, 8), offset=3)
    with pytest.raises(ValueError, match="x must be on the table's device"):
        embed(torch.zeros(1, 9, 8, device=META))


def test_a_compiled_learned_embedding_still_refuses_a_long_sequence():
    torch._dynamo.reset()
    embed = LearnedPositionalEmbedding(10, 8)
    compiled = torch.compile(embed, backend="eager", fullgraph=True, dynamic=True)
    compiled(torch.zeros(1, 5, 8))
    with pytest.raises(RuntimeError, match=r"longer than the table's max_positions"):
        compiled(torch.zeros(1, 12, 8))


# --- rotary ------------------------------------------------------------------------


def rotary_reference(x, positions, base=10000.0):
    """Pairs as complex numbers x_2i + i x_2i+1, multiplied by e^(i p w_i)."""
    z = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
    angles = positions.double()[..., None] * frequencies(x.shape[-1], base)
    turn = torch.polar(torch.ones_like(angles), angles)
    return torch.view_as_real(z * turn).flatten(-2)


def test_rotary_is_multiplication_by_unit_complex_numbers():
    x = randn(2, 3, 11, 8)
    torch.testing.assert_close(rotary_embedding(x), rotary_reference(x, torch.arange(11)))
    positions = torch.tensor([0.5, 3.0, -2.0, 100.0])  # float and negative positions
    torch.testing.assert_close(
        rotary_embedding(x[..., :4, :], positions=positions, base=500.0),
        rotary_reference(x[..., :4, :], positions, base=500.0),
    )


def test_rotary_keeps_every_pairs_length():
    x = randn(4, 20, 16)
    pair_norms = x.unflatten(-1, (8, 2)).norm(dim=-1)
    rotated = rotary_embedding(x).unflatten(-1, (8, 2)).norm(dim=-1)
    torch.testing.assert_close(rotated, pair_norms)


def test_rotary_scores_depend_only_on_the_offset():
    q, k = randn(16, seed=1), randn(16, seed=2)

    def score(p, p_key):
        q_p = rotary_embedding(q[None], positions=torch.tensor([p]))
        k_p = rotary_embedding(k[None], positions=torch.tensor([p_key]))
        return (q_p @ k_p.T).item()

    for offset in (0, 1, 5, -3, 40):
        scores = [score(p, p - offset) for p in (0, 7, 100, 1234)]
        assert scores == pytest.approx([scores[0]] * 4, abs=1e-10)
    assert score(10, 9) != pytest.approx(score(10, 5), abs=1e-3)  # and it does depend on it


def test_rotary_score_matrix_is_constant_along_diagonals():
    n = 12
    q = randn(1, 16, seed=3).expand(n, 16)  # the same query and key at every position
    k = randn(1, 16, seed=4).expand(n, 16)
    scores = rotary_embedding(q) @ rotary_embedding(k).T  # (n, n), entry [p, p']
    for offset in range(-n + 1, n):
        diagonal = torch.diagonal(scores, offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal))


def test_rotary_at_position_zero_is_the_identity():
    x = randn(3, 1, 8)
    assert torch.equal(rotary_embedding(x), x)
    assert torch.equal(rotary_embedding(randn(5, 8), positions=torch.zeros(5))[2], randn(5, 8)[2])


def test_rotary_positions_offset_by_m_rotate_by_m_more():
    x, m = randn(2, 7, 8), 9
    arange = torch.arange(7)
    shifted = rotary_embedding(x, positions=arange + m)
    torch.testing.assert_close(
        shifted, rotary_embedding(rotary_embedding(x), positions=torch.full((7,), m))
    )
    # a KV cache: the last 3 tokens of a 10-token sequence, given their positions
    longer = randn(2, 10, 8)
    torch.testing.assert_close(
        rotary_embedding(longer[:, 7:], positions=torch.arange(7, 10)),
        rotary_embedding(longer)[:, 7:],
    )


def test_rotary_positions_broadcast_per_batch():
    x = randn(2, 3, 5, 8)  # (batch, heads, n, d)
    positions = torch.tensor([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]])[:, None, :]  # (2, 1, 5)
    got = rotary_embedding(x, positions=positions)
    torch.testing.assert_close(got[0], rotary_embedding(x[0]))
    torch.testing.assert_close(got[1], rotary_embedding(x[1], positions=torch.arange(10, 15)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rotary_in_half_precision_rounds_once_at_the_end(dtype):
    # Angles and products in float32, one rounding to the dtype at the end: the
    # result is the exact rotation of the rounded inputs, rounded (bar a few ties);
    # products in bfloat16 itself would miss in about a third of the elements.
    x = randn(4, 256, 64).to(dtype)
    got = rotary_embedding(x)
    assert got.dtype == dtype
    exact = rotary_embedding(x.double()).to(dtype)
    assert (got == exact).double().mean() > 0.99
    torch.testing.assert_close(got, exact)


def test_rotary_in_float32_is_close_to_float64():
    x = randn(4, 256, 64)
    got = rotary_embedding(x.float())
    assert got.dtype == torch.float32
    # float32 angles err by up to about p * 2^-24 radians: 1.5e-5 at p = 255
    torch.testing.assert_close(got.double(), rotary_embedding(x), rtol=1e-4, atol=1e-4)


def test_rotary_runs_on_meta_and_the_module_equals_the_function():
    out = rotary_embedding(torch.empty(2, 3, 5, 8, device=META))
    assert out.device == META and out.shape == (2, 3, 5, 8)
    x, positions = randn(2, 5, 8), torch.arange(3, 8)
    rotate = RotaryEmbedding(8, base=100.0)
    assert torch.equal(
        rotate(x, positions=positions), rotary_embedding(x, positions=positions, base=100.0)
    )


# --- ALiBi -------------------------------------------------------------------------


def paper_slopes(n):
    """The ALiBi authors' get_slopes, as in their repository
    (github.com/ofirpress/attention_with_linear_biases)."""

    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + paper_slopes(2 * closest)[0::2][: n - closest]


def test_alibi_slopes_for_eight_heads_are_halves():
    expected = torch.tensor([1 / 2**h for h in range(1, 9)], dtype=torch.float64)
    assert torch.equal(alibi_slopes(8, dtype=torch.float64), expected)


@pytest.mark.parametrize("n_heads", [*range(1, 33), 48, 96])
def test_alibi_slopes_follow_the_papers_rule_for_any_head_count(n_heads):
    expected = torch.tensor(paper_slopes(n_heads), dtype=torch.float64)
    torch.testing.assert_close(alibi_slopes(n_heads, dtype=torch.float64), expected)


def test_alibi_slopes_for_twelve_heads_interleave_those_for_eight_and_sixteen():
    got = alibi_slopes(12, dtype=torch.float64)
    torch.testing.assert_close(got[:8], alibi_slopes(8, dtype=torch.float64))
    torch.testing.assert_close(got[8:], alibi_slopes(16, dtype=torch.float64)[0:8:2])


def test_alibi_bias_is_zero_on_the_diagonal_and_falls_by_the_slope_per_step():
    n_heads, n = 4, 9
    bias = alibi_bias(n_heads, n, dtype=torch.float64)
    slopes = alibi_slopes(n_heads, dtype=torch.float64)
    assert bias.shape == (n_heads, n, n)
    assert (torch.diagonal(bias, dim1=-2, dim2=-1) == 0).all()
    steps = bias[:, :, 1:] - bias[:, :, :-1]  # one key to the right
    past = torch.ones(n, n - 1).tril(-1).bool()  # key j + 1 <= query i: nearer
    torch.testing.assert_close(steps[:, past], slopes[:, None].expand(-1, int(past.sum())))
    for h in range(n_heads):
        for i in range(n):
            for j in range(n):
                assert bias[h, i, j] == pytest.approx(-slopes[h].item() * abs(i - j))


def test_alibi_future_keys_get_the_symmetric_bias():
    bias = alibi_bias(3, 6)
    torch.testing.assert_close(bias, bias.transpose(-2, -1))


def test_alibi_queries_are_the_last_rows_like_causal_mask():
    full = alibi_bias(4, 10)
    torch.testing.assert_close(alibi_bias(4, 3, 10), full[:, -3:, :])
    assert alibi_bias(2, 1, 5)[:, 0, -1].eq(0).all()  # the newest query sits on the last key


def test_alibi_through_sdpa_equals_the_scores_plus_bias():
    q, k, v = randn(2, 4, 5, 8, seed=1), randn(2, 4, 7, 8, seed=2), randn(2, 4, 7, 3, seed=3)
    bias = alibi_bias(4, 5, 7, dtype=torch.float64)
    allowed = causal_mask(5, 7)
    attn_mask = torch.where(allowed, bias, float("-inf"))
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    scores = q @ k.transpose(-2, -1) / math.sqrt(8) + bias
    weights = torch.where(allowed, scores, float("-inf")).softmax(-1)
    torch.testing.assert_close(got, weights @ v)
    # under the causal mask, the paper's bias equals slope * key_position (a shift per row)
    slopes = alibi_slopes(4, dtype=torch.float64)[:, None, None]
    shifted = torch.where(allowed, scores - bias + slopes * torch.arange(7.0), float("-inf"))
    torch.testing.assert_close(shifted.softmax(-1), weights)


def test_alibi_takes_dtype_device_and_meta():
    assert alibi_bias(2, 3).dtype == torch.get_default_dtype()
    assert alibi_bias(2, 3, dtype=torch.bfloat16).dtype == torch.bfloat16
    torch.testing.assert_close(
        alibi_bias(8, 40, dtype=torch.bfloat16).double(),
        alibi_bias(8, 40, dtype=torch.float64),
        rtol=1e-2,
        atol=0,
    )
    bias = alibi_bias(2, 3, 5, device=META)
    assert bias.device == META and bias.shape == (2, 3, 5)
    assert alibi_slopes(3, device=META).device == META


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bfloat16_matches_the_cpu():
    cuda = torch.device("cuda")
    x = randn(2, 4, 33, 16).to(torch.bfloat16)
    positions = torch.arange(33) + 100
    pairs = [
        (
            rotary_embedding(x, positions=positions),
            rotary_embedding(x.to(cuda), positions=positions.to(cuda)),
        ),
        (
            sinusoidal_encoding(33, 16, dtype=torch.bfloat16),
            sinusoidal_encoding(33, 16, device=cuda, dtype=torch.bfloat16),
        ),
        (SinusoidalPositionalEncoding(16)(x), SinusoidalPositionalEncoding(16)(x.to(cuda))),
        (
            alibi_bias(4, 33, dtype=torch.bfloat16),
            alibi_bias(4, 33, device=cuda, dtype=torch.bfloat16),
        ),
    ]
    for on_cpu, on_cuda in pairs:
        assert on_cuda.device.type == "cuda" and on_cuda.dtype == torch.bfloat16
        torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-2, atol=1e-2)


# --- torch.compile and torch.export ------------------------------------------------


SINUSOIDAL, LEARNED = SinusoidalPositionalEncoding(8), LearnedPositionalEmbedding(32, 8)


def add_sinusoidal(x):
    return SINUSOIDAL(x)


def add_learned(x):
    return LEARNED(x)


def rotate(x):
    return rotary_embedding(x)


def rotate_after_cache(x):
    n = x.shape[-2]
    return rotary_embedding(x, positions=torch.arange(n, device=x.device) + 3)


def add_alibi(scores):
    return scores + alibi_bias(4, scores.shape[-2], scores.shape[-1], dtype=scores.dtype)


def sinusoids_of_length(x):
    return sinusoidal_encoding(x.shape[-2], 8, dtype=x.dtype)


@pytest.mark.parametrize(
    "function",
    [add_sinusoidal, add_learned, rotate, rotate_after_cache, add_alibi, sinusoids_of_length],
    ids=lambda f: f.__name__,
)
def test_one_compilation_serves_every_length_without_a_graph_break(function):
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(function, backend=counter, fullgraph=True, dynamic=True)
    for n in LENGTHS:
        shape = (2, 4, n, n + 2) if function is add_alibi else (2, 4, n, 8)
        x = randn(*shape, seed=n)
        torch.testing.assert_close(compiled(x), function(x))
    assert counter.frame_count <= 2, f"{counter.frame_count} compilations for 12 lengths"


def test_alibi_bias_compiled_with_integer_sizes_compiles_once():
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(alibi_bias, backend=counter, fullgraph=True, dynamic=True)
    for n in LENGTHS:
        torch.testing.assert_close(compiled(4, n, n + 3), alibi_bias(4, n, n + 3))
    assert counter.frame_count <= 2


@pytest.mark.parametrize(
    "module",
    [SinusoidalPositionalEncoding(8), LearnedPositionalEmbedding(64, 8), RotaryEmbedding(8)],
    ids=lambda m: type(m).__name__,
)
def test_exports_with_a_dynamic_length(module):
    n = Dim("n", min=2, max=64)  # a learned table bounds the length: at most 64 rows
    program = export(module, (randn(2, 6, 8),), dynamic_shapes=({1: n},))
    for length in (3, 11, 64):
        x = randn(2, length, 8, seed=length)
        torch.testing.assert_close(program.module()(x), module(x))


# --- errors ------------------------------------------------------------------------


X = torch.zeros(2, 5, 8)
BAD_CALLS = [
    # sinusoidal
    (lambda: sinusoidal_encoding(4, 7), ValueError, r"d_model must be even .* got 7"),
    (lambda: sinusoidal_encoding(4, 0), ValueError, r"d_model must be at least 2, got 0"),
    (lambda: sinusoidal_encoding(-1, 4), ValueError, r"n_positions must be at least 0, got -1"),
    (lambda: sinusoidal_encoding(4.0, 4), TypeError, r"n_positions must be an int, got float"),
    (lambda: sinusoidal_encoding(4, 4, base=0.0), ValueError, r"base must be positive, got 0\.0"),
    (lambda: sinusoidal_encoding(4, 4, base=math.inf), ValueError, r"base must be finite, got inf"),
    (
        lambda: sinusoidal_encoding(4, 4, dtype=torch.int64),
        TypeError,
        r"dtype must be a floating-point torch\.dtype, got torch\.int64",
    ),
    (lambda: SinusoidalPositionalEncoding(5), ValueError, r"d_model must be even .* got 5"),
    (
        lambda: SinusoidalPositionalEncoding(4, dropout=1.0),
        ValueError,
        r"dropout must be in \[0, 1\), got 1\.0",
    ),
    (
        lambda: SinusoidalPositionalEncoding(8)(X, offset=-1),
        ValueError,
        r"offset must be at least 0, got -1",
    ),
    # learned
    (
        lambda: LearnedPositionalEmbedding(4, 4, dropout="0.1"),
        TypeError,
        r"dropout must be a real number, got str",
    ),
    (
        lambda: LearnedPositionalEmbedding(0, 8),
        ValueError,
        r"max_positions must be at least 1, got 0",
    ),
    # rotary
    (lambda: RotaryEmbedding(3), ValueError, r"d must be even .* got 3"),
    (
        lambda: rotary_embedding(torch.zeros(2, 5, 7)),
        ValueError,
        r"x must have an even number of features .* got shape \(2, 5, 7\)",
    ),
    (
        lambda: rotary_embedding(torch.zeros(5, 0)),
        ValueError,
        r"x must have an even number of features .* got shape \(5, 0\)",
    ),
    (
        lambda: rotary_embedding(X.int()),
        TypeError,
        r"x must be a floating-point tensor, got dtype torch\.int32",
    ),
    (
        lambda: rotary_embedding(torch.zeros(8)),
        ValueError,
        r"x must have at least 2 dimensions, got shape \(8,\)",
    ),
    (
        lambda: rotary_embedding(X, positions=torch.arange(4)),
        ValueError,
        r"positions must have one entry per token \(n=5\) .* got shape \(4,\)",
    ),
    (
        lambda: rotary_embedding(X, positions=torch.zeros(3, 5)),
        ValueError,
        r"broadcast to x's leading dimensions \(2, 5\), got shape \(3, 5\)",
    ),
    (
        lambda: rotary_embedding(X, positions=torch.tensor(3)),
        ValueError,
        r"positions must have at least 1 dimensions, got shape \(\)",
    ),
    (
        lambda: rotary_embedding(X, positions=torch.ones(5, dtype=torch.bool)),
        TypeError,
        r"positions must hold integers or real numbers, got dtype torch\.bool",
    ),
    (
        lambda: rotary_embedding(X, positions=torch.arange(5, device=META)),
        ValueError,
        r"positions must be on x's device cpu, got meta",
    ),
    (lambda: rotary_embedding(X, base=-2.0), ValueError, r"base must be positive, got -2\.0"),
    # ALiBi
    (lambda: alibi_slopes(0), ValueError, r"n_heads must be at least 1, got 0"),
    (lambda: alibi_bias(2.0, 3), TypeError, r"n_heads must be an int, got float"),
    (lambda: alibi_bias(2, 3, -2), ValueError, r"n_keys must be at least 0, got -2"),
    (
        lambda: alibi_bias(2, 3, dtype=torch.bool),
        TypeError,
        r"dtype must be a floating-point torch\.dtype, got torch\.bool",
    ),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD_CALLS)
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        (torch.zeros(2, 5, 6), ValueError, r"x must have 8 features .* got shape \(2, 5, 6\)"),
        (
            torch.zeros(2, 5, 8, dtype=torch.long),
            TypeError,
            r"x must be a floating-point tensor, got dtype torch\.int64",
        ),
        (torch.zeros(8), ValueError, r"x must have at least 2 dimensions, got shape \(8,\)"),
        ([[0.0] * 8], TypeError, r"x must be a torch\.Tensor, got list"),
    ],
)
@pytest.mark.parametrize(
    "module",
    [SinusoidalPositionalEncoding(8), LearnedPositionalEmbedding(16, 8), RotaryEmbedding(8)],
    ids=lambda m: type(m).__name__,
)
def test_bad_module_inputs_are_named(module, x, error, message):
    with pytest.raises(error, match=message):
        module(x)


def test_a_learned_table_is_made_on_the_device_and_dtype_asked():
    table = LearnedPositionalEmbedding(16, 8, device="meta", dtype=torch.float64)
    assert table.embedding.weight.device.type == "meta"
    assert table.embedding.weight.dtype == torch.float64
