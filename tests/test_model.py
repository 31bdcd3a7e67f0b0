"""Tests of tinyformer.Transformer: shapes, tied embeddings, the paper's sizes,
padding invariance, causality through the whole model, devices, compilation and
errors."""

from __future__ import annotations

import math

import pytest
import torch

from tinyformer import Transformer, padding_mask

SMALL = {"d_model": 16, "n_heads": 2, "n_encoder_layers": 2, "n_decoder_layers": 2,
         "d_ff": 32, "dropout": 0.0}


def small(norm_first=False, **kwargs):
    torch.manual_seed(0)
    return Transformer(11, 13, **SMALL, norm_first=norm_first, **kwargs).double()


def test_the_output_layer_is_the_target_embedding():
    model = small()
    assert model.output.weight is model.tgt_embed.weight
    assert model.tgt_embed is not model.src_embed
    shared = Transformer(11, 11, **SMALL, share_embeddings=True)
    assert shared.src_embed is shared.tgt_embed and shared.output.weight is shared.src_embed.weight
    with torch.no_grad():  # one matrix: a change to the embedding changes the logits
        shared.output.weight[3] += 1.0
    assert torch.equal(shared.tgt_embed.weight[3], shared.output.weight[3])


def test_the_papers_base_and_big_parameter_counts():
    def count(d, h, d_ff, vocab=37_000, layers=6):
        attention = 4 * (d * d + d)
        encoder_layer = attention + 2 * d * d_ff + d_ff + d + 2 * 2 * d
        decoder_layer = 2 * attention + 2 * d * d_ff + d_ff + d + 3 * 2 * d
        return vocab * d + layers * (encoder_layer + decoder_layer)

    for d, h, d_ff in ((512, 8, 2048), (1024, 16, 4096)):
        model = Transformer(37_000, 37_000, d_model=d, n_heads=h, d_ff=d_ff,
                            share_embeddings=True, device="meta")
        assert sum(p.numel() for p in model.parameters()) == count(d, h, d_ff)
    assert round(count(512, 8, 2048) / 1e6) == 63  # the paper's table says 65M
    assert round(count(1024, 16, 4096) / 1e6) == 214  # and 213M


def test_every_matrix_starts_xavier_uniform():
    model = Transformer(50, 60, **SMALL)
    for name, parameter in model.named_parameters():
        if parameter.dim() > 1:
            fan_out, fan_in = parameter.shape
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert parameter.abs().max() <= bound, name
            assert parameter.abs().max() > 0.9 * bound, name


@pytest.mark.parametrize("norm_first", [False, True])
def test_encode_then_decode_is_the_forward_pass(norm_first):
    model = small(norm_first)
    assert (model.encoder.norm is None) == (not norm_first)
    src, tgt = torch.randint(11, (3, 7)), torch.randint(13, (3, 5))
    src_key_mask = padding_mask([7, 4, 1], 7)
    logits = model(src, tgt, src_key_mask=src_key_mask)
    assert logits.shape == (3, 5, 13)
    memory = model.encode(src, src_key_mask=src_key_mask)
    torch.testing.assert_close(model.decode(tgt, memory, src_key_mask=src_key_mask), logits)


@pytest.mark.parametrize("norm_first", [False, True])
def test_source_padding_never_changes_the_output(norm_first):
    model = small(norm_first)
    src, tgt = torch.randint(11, (2, 6)), torch.randint(13, (2, 4))
    lengths = [6, 3]
    logits = model(src[:, :6], tgt, src_key_mask=padding_mask(lengths, 6))
    longer = torch.cat([src, torch.randint(11, (2, 3))], dim=1)  # more padding
    longer[1, 3:] = torch.randint(11, (6,))  # other junk where sequence 1 is padded
    torch.testing.assert_close(model(longer, tgt, src_key_mask=padding_mask(lengths, 9)),
                               logits)


def test_no_target_token_sees_the_ones_after_it():
    model = small()
    src, tgt = torch.randint(11, (2, 6)), torch.randint(13, (2, 5))
    logits = model(src, tgt)
    changed = tgt.clone()
    changed[:, 2:] = (changed[:, 2:] + 1) % 13
    torch.testing.assert_close(model(src, changed)[:, :2], logits[:, :2])
    assert not torch.allclose(model(src, changed)[:, 2:], logits[:, 2:])


def test_runs_on_the_meta_device():
    model = Transformer(11, 13, **SMALL, device="meta")
    src = torch.zeros(2, 7, dtype=torch.long, device="meta")
    logits = model(src, src[:, :5])
    assert logits.shape == (2, 5, 13) and logits.device.type == "meta"


def test_compiles_once_for_every_length():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    model = Transformer(11, 13, **SMALL).eval()
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    for n in range(3, 13):
        src, tgt = torch.randint(11, (2, n)), torch.randint(13, (2, n - 1))
        mask = padding_mask([n, 2], n)
        torch.testing.assert_close(compiled(src, tgt, src_key_mask=mask),
                                   model(src, tgt, src_key_mask=mask))
    assert counter.frame_count <= 2


def test_bad_input_is_named():
    model = small()
    src = torch.randint(11, (2, 5))
    with pytest.raises(ValueError, match=r"src must hold token ids in \[0, 11\), got ids from"):
        model(src + 11, src)
    with pytest.raises(ValueError, match=r"tgt must be token ids of shape \(batch, length\)"):
        model(src, src.float())
    with pytest.raises(ValueError, match=r"tgt must be token ids .* got shape \(5,\)"):
        model(src, src[0])
    with pytest.raises(ValueError, match="share_embeddings needs src_vocab_size == tgt_vocab"):
        Transformer(11, 13, share_embeddings=True)
    with pytest.raises(ValueError, match="n_heads must divide d_model"):
        Transformer(11, 13, d_model=10, n_heads=4)
