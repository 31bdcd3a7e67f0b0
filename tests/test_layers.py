"""Tests of tinyformer.layers: equal to PyTorch's Transformer layers and stacks,
post-norm and pre-norm, relu and gelu, batch_first either way; padding, causality,
devices, compilation and errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tinyformer import (
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    FeedForward,
    causal_mask,
    mask_to_torch,
    padding_mask,
)

F64 = torch.float64
D_MODEL, N_HEADS, D_FF = 8, 2, 16
OPTIONS = [
    {"norm_first": norm_first, "activation": activation, "batch_first": batch_first}
    for norm_first in (False, True)
    for activation in ("relu", "gelu")
    for batch_first in (True, False)
]


def torch_input(x, batch_first):
    """PyTorch's layout of a batch-first tensor."""
    return x if batch_first else x.transpose(0, 1)


def ours_output(y, batch_first):
    """A PyTorch output back in batch-first layout."""
    return y if batch_first else y.transpose(0, 1)


def inputs(batch=3, n=5, n_memory=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, D_MODEL, dtype=F64, generator=gen)
    memory = torch.randn(batch, n_memory, D_MODEL, dtype=F64, generator=gen)
    key_mask = padding_mask(torch.randint(1, n + 1, (batch,), generator=gen), n)
    memory_key_mask = padding_mask(torch.randint(1, n_memory + 1, (batch,), generator=gen),
                                   n_memory)
    return x, memory, key_mask, memory_key_mask


def test_feed_forward_is_the_two_linear_layers():
    torch.manual_seed(0)
    ff = FeedForward(D_MODEL, D_FF, activation="gelu", dtype=F64)
    x = torch.randn(2, 4, D_MODEL, dtype=F64)
    hidden = torch.nn.functional.gelu(x @ ff.linear1.weight.T + ff.linear1.bias)
    torch.testing.assert_close(ff(x), hidden @ ff.linear2.weight.T + ff.linear2.bias)


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_encoder_layer_equals_pytorch(options):
    torch.manual_seed(1)
    theirs = nn.TransformerEncoderLayer(D_MODEL, N_HEADS, D_FF, dropout=0.0, dtype=F64,
                                        **options)
    ours = EncoderLayer.from_torch(theirs)
    x, _, key_mask, _ = inputs()
    batch_first = options["batch_first"]
    # In train() PyTorch takes its plain path: every position is compared.
    expected = theirs(torch_input(x, batch_first), src_key_padding_mask=mask_to_torch(key_mask))
    output = ours(x, key_mask=key_mask)
    torch.testing.assert_close(output, ours_output(expected, batch_first))
    # Gradients agree too: the quantity training moves.
    output.square().sum().backward()
    ours_output(expected, batch_first).square().sum().backward()
    torch.testing.assert_close(ours.self_attn.q_proj.weight.grad,
                               theirs.self_attn.in_proj_weight.grad[:D_MODEL])
    torch.testing.assert_close(ours.feed_forward.linear1.weight.grad, theirs.linear1.weight.grad)


@pytest.mark.parametrize("batch_first", [True, False])
def test_encoder_layer_equals_pytorchs_fast_path_on_real_tokens(batch_first):
    """PyTorch's inference fast path (a fused kernel) agrees on real tokens."""
    torch.manual_seed(2)
    theirs = nn.TransformerEncoderLayer(D_MODEL, N_HEADS, D_FF, batch_first=batch_first).eval()
    ours = EncoderLayer.from_torch(theirs)
    x, _, key_mask, _ = inputs()
    x = x.float()
    with torch.no_grad():
        expected = ours_output(
            theirs(torch_input(x, batch_first), src_key_padding_mask=mask_to_torch(key_mask)),
            batch_first,
        )
        output = ours(x, key_mask=key_mask)
    torch.testing.assert_close(output[key_mask], expected[key_mask])


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_decoder_layer_equals_pytorch_with_a_causal_target_mask(options):
    torch.manual_seed(3)
    theirs = nn.TransformerDecoderLayer(D_MODEL, N_HEADS, D_FF, dropout=0.0, dtype=F64,
                                        **options)
    ours = DecoderLayer.from_torch(theirs)
    y, memory, key_mask, memory_key_mask = inputs()
    batch_first = options["batch_first"]
    causal = mask_to_torch(causal_mask(y.shape[1]))  # bool, like the padding masks
    expected = theirs(
        torch_input(y, batch_first), torch_input(memory, batch_first), tgt_mask=causal,
        tgt_is_causal=True, tgt_key_padding_mask=mask_to_torch(key_mask),
        memory_key_padding_mask=mask_to_torch(memory_key_mask),
    )
    output = ours(y, memory, key_mask=key_mask, memory_key_mask=memory_key_mask)
    torch.testing.assert_close(output, ours_output(expected, batch_first))


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("final_norm", [False, True])
def test_stacks_equal_pytorchs(norm_first, final_norm):
    torch.manual_seed(4)
    kwargs = {"dropout": 0.0, "dtype": F64, "batch_first": True, "norm_first": norm_first}
    norm = nn.LayerNorm(D_MODEL, dtype=F64) if final_norm else None
    encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(D_MODEL, N_HEADS, D_FF, **kwargs), 3, norm=norm,
        enable_nested_tensor=False,
    )
    decoder = nn.TransformerDecoder(
        nn.TransformerDecoderLayer(D_MODEL, N_HEADS, D_FF, **kwargs), 2,
        norm=None if norm is None else nn.LayerNorm(D_MODEL, dtype=F64),
    )
    for module in (encoder, decoder):  # the copies are not the same layer thrice
        for parameter in module.parameters():
            nn.init.normal_(parameter)
    ours_encoder, ours_decoder = Encoder.from_torch(encoder), Decoder.from_torch(decoder)
    assert len(ours_encoder.layers) == 3 and len(ours_decoder.layers) == 2
    assert (ours_encoder.norm is None) == (not final_norm)
    x, tgt, key_mask, _ = inputs()
    expected_memory = encoder(x, src_key_padding_mask=mask_to_torch(key_mask))
    ours_memory = ours_encoder(x, key_mask=key_mask)
    torch.testing.assert_close(ours_memory, expected_memory)
    causal = mask_to_torch(causal_mask(tgt.shape[1]))
    expected = decoder(tgt, ours_memory, tgt_mask=causal, tgt_is_causal=True,
                       memory_key_padding_mask=mask_to_torch(key_mask))
    torch.testing.assert_close(ours_decoder(tgt, ours_memory, memory_key_mask=key_mask),
                               expected)


def test_parameter_counts_equal_pytorchs():
    theirs = nn.TransformerDecoderLayer(512, 8, 2048)
    assert sum(p.numel() for p in DecoderLayer(512, 8, 2048).parameters()) == sum(
        p.numel() for p in theirs.parameters()
    )
    encoder = Encoder(512, 8, 2048, 6, final_norm=True)
    assert sum(p.numel() for p in encoder.parameters()) == 6 * 3_152_384 + 1_024
    no_bias = EncoderLayer(16, 4, 64, bias=False)
    assert all(name.endswith("weight") for name, _ in no_bias.named_parameters())


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=3), extra=st.integers(0, 3),
       norm_first=st.booleans(), seed=st.integers(0, 2**16))
def test_padding_never_reaches_real_tokens(lengths, extra, norm_first, seed):
    """Padding to any length, with garbage in the padding, changes no real output."""
    torch.manual_seed(seed)
    encoder = Encoder(D_MODEL, N_HEADS, D_FF, 2, dropout=0.0, norm_first=norm_first,
                      dtype=F64)
    decoder = Decoder(D_MODEL, N_HEADS, D_FF, 2, dropout=0.0, norm_first=norm_first,
                      dtype=F64)
    n = max(lengths)
    src = torch.randn(len(lengths), n + extra, D_MODEL, dtype=F64)
    long_mask = padding_mask(lengths, n + extra)
    src = torch.where(long_mask[..., None], src, torch.tensor(float("nan"), dtype=F64))
    short_mask = padding_mask(lengths, n)
    memory = encoder(src[:, :n], key_mask=short_mask)
    long_memory = encoder(src, key_mask=long_mask)
    torch.testing.assert_close(long_memory[:, :n][short_mask], memory[short_mask])
    tgt = torch.randn(len(lengths), 4, D_MODEL, dtype=F64)
    torch.testing.assert_close(decoder(tgt, long_memory, memory_key_mask=long_mask),
                               decoder(tgt, memory, memory_key_mask=short_mask))


def test_the_decoder_never_sees_the_future():
    torch.manual_seed(5)
    decoder = Decoder(D_MODEL, N_HEADS, D_FF, 3, dropout=0.0, dtype=F64)
    y = torch.randn(2, 6, D_MODEL, dtype=F64, requires_grad=True)
    memory = torch.randn(2, 4, D_MODEL, dtype=F64)
    output = decoder(y, memory)
    changed = y.detach().clone()
    changed[:, 3:] = 1e3 * torch.randn(2, 3, D_MODEL, dtype=F64)
    torch.testing.assert_close(decoder(changed, memory)[:, :3], output[:, :3])
    # A random read-out: a plain sum of a LayerNorm's output has zero gradient.
    (output[:, :3] * torch.randn_like(output[:, :3])).sum().backward()
    assert (y.grad[:, 3:] == 0).all() and (y.grad[:, :3] != 0).all()


def test_dropout_acts_only_in_training():
    torch.manual_seed(6)
    layer = EncoderLayer(D_MODEL, N_HEADS, D_FF, dropout=0.5, dtype=F64)
    x = torch.randn(2, 5, D_MODEL, dtype=F64)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))
    layer.train()
    assert not torch.allclose(layer(x), layer(x))


def test_runs_on_the_meta_device_and_in_bfloat16():
    meta = Decoder(D_MODEL, N_HEADS, D_FF, 2, final_norm=True, device="meta")
    y = torch.empty(2, 5, D_MODEL, device="meta")
    assert meta(y, torch.empty(2, 3, D_MODEL, device="meta")).device.type == "meta"
    half = Encoder(D_MODEL, N_HEADS, D_FF, 2, dtype=torch.bfloat16).eval()
    x = torch.randn(2, 5, D_MODEL, dtype=torch.bfloat16)
    output = half(x, key_mask=padding_mask([5, 2], 5))
    assert output.dtype == torch.bfloat16 and torch.isfinite(output).all()


def test_compiles_once_for_every_length():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    encoder = Encoder(D_MODEL, N_HEADS, D_FF, 2, dropout=0.0).eval()
    decoder = Decoder(D_MODEL, N_HEADS, D_FF, 2, dropout=0.0).eval()

    def model(src, tgt, src_mask):
        memory = encoder(src, key_mask=src_mask)
        return decoder(tgt, memory, memory_key_mask=src_mask)

    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    for n in range(3, 13):
        src, tgt = torch.randn(2, n, D_MODEL), torch.randn(2, n + 1, D_MODEL)
        src_mask = padding_mask([n, n - 1], n)
        torch.testing.assert_close(compiled(src, tgt, src_mask), model(src, tgt, src_mask))
    assert counter.frame_count <= 2


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: FeedForward(8, 0), ValueError, "d_ff"),
        (lambda: FeedForward(8, 16, activation="tanh"), ValueError, "activation must be one of"),
        (lambda: EncoderLayer(8, 3, 16), ValueError, "n_heads must divide d_model"),
        (lambda: EncoderLayer(8, 2, 16, dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
        (lambda: EncoderLayer(8, 2, 16, norm_first="yes"), TypeError, "norm_first must be a bool"),
        (lambda: DecoderLayer(8, 2, 16, layer_norm_eps=0.0), ValueError, "layer_norm_eps"),
        (lambda: Encoder(8, 2, 16, 0), ValueError, "n_layers"),
        (lambda: EncoderLayer.from_torch(nn.Linear(2, 2)), TypeError, "TransformerEncoderLayer"),
        (lambda: DecoderLayer.from_torch(nn.TransformerEncoderLayer(8, 2, 16)), TypeError,
         "TransformerDecoderLayer"),
        (lambda: EncoderLayer.from_torch(nn.TransformerEncoderLayer(8, 2, 16,
                                                                    activation=torch.tanh)),
         ValueError, "relu or gelu"),
    ],
)
def test_bad_construction_is_named(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_bad_inputs_are_named():
    layer = DecoderLayer(D_MODEL, N_HEADS, D_FF)
    y = torch.randn(2, 5, D_MODEL)
    with pytest.raises(ValueError, match=r"y must be 3-D .* got shape \(5, 8\)"):
        layer(y[0], y)
    with pytest.raises(ValueError, match=r"memory must have d_model=8 .* \(2, 5, 4\)"):
        layer(y, y[..., :4])
    with pytest.raises(ValueError, match="memory must have y's batch size 2"):
        layer(y, y[:1])
    with pytest.raises(ValueError, match=r"key_mask must have shape \(batch, n_k\)"):
        layer(y, y, memory_key_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        EncoderLayer(D_MODEL, N_HEADS, D_FF)([[1.0]])
