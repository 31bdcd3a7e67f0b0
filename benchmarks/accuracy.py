"""The largest difference between tinyformer's modules and PyTorch's, on random
inputs and weights copied by ``from_torch``, in float64 and float32.

    python benchmarks/accuracy.py                 # 200 random cases per module
    python benchmarks/accuracy.py --cases 5       # quick (the test)

Cases vary batch, lengths, heads, kdim/vdim, bias and padding (and, for the
layers, post-/pre-norm and relu/gelu). Outputs are compared on real tokens; for
MultiHeadAttention the per-head weights too.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from tinyformer import (
    DecoderLayer,
    EncoderLayer,
    MultiHeadAttention,
    causal_mask,
    mask_to_torch,
    padding_mask,
)


def attention_case(trial: int, dtype: torch.dtype, gen: torch.Generator) -> tuple[float, float]:
    batch, n_q, n_k = (int(s) for s in torch.randint(1, 6, (3,), generator=gen))
    heads, d_model = [1, 2, 4, 8][trial % 4], 32
    kdim, vdim, bias = [None, 16, 32][trial % 3], [None, 24][trial % 2], trial % 5 != 0
    theirs = nn.MultiheadAttention(d_model, heads, batch_first=True, bias=bias, kdim=kdim,
                                   vdim=vdim, dtype=dtype)
    ours = MultiHeadAttention.from_torch(theirs)
    query = torch.randn(batch, n_q, d_model, dtype=dtype, generator=gen)
    key = torch.randn(batch, n_k, kdim or d_model, dtype=dtype, generator=gen)
    value = torch.randn(batch, n_k, vdim or d_model, dtype=dtype, generator=gen)
    key_mask = padding_mask(torch.randint(1, n_k + 1, (batch,), generator=gen), n_k)
    expected, expected_weights = theirs(query, key, value, key_padding_mask=mask_to_torch(key_mask),
                                        need_weights=True, average_attn_weights=False)
    output, weights = ours(query, key, value, key_mask=key_mask, need_weights=True)
    fast = ours(query, key, value, key_mask=key_mask)  # the SDPA path
    output_diff = max((expected - output).abs().max().item(), (expected - fast).abs().max().item())
    return output_diff, (expected_weights - weights).abs().max().item()


def layer_case(trial: int, dtype: torch.dtype, gen: torch.Generator) -> tuple[float, float]:
    options = {"norm_first": trial % 2 == 0, "activation": ["relu", "gelu"][trial // 2 % 2],
               "dropout": 0.0, "batch_first": True, "dtype": dtype}
    d_model, heads, d_ff = 32, [1, 2, 4][trial % 3], 64
    batch, n, n_memory = (int(s) for s in torch.randint(1, 7, (3,), generator=gen))
    encoder = nn.TransformerEncoderLayer(d_model, heads, d_ff, **options)
    decoder = nn.TransformerDecoderLayer(d_model, heads, d_ff, **options)
    x = torch.randn(batch, n, d_model, dtype=dtype, generator=gen)
    memory = torch.randn(batch, n_memory, d_model, dtype=dtype, generator=gen)
    key_mask = padding_mask(torch.randint(1, n + 1, (batch,), generator=gen), n)
    memory_mask = padding_mask(torch.randint(1, n_memory + 1, (batch,), generator=gen), n_memory)
    # train() with no dropout: PyTorch's plain path, every real token compared.
    expected = encoder(x, src_key_padding_mask=mask_to_torch(key_mask))
    encoded = EncoderLayer.from_torch(encoder)(x, key_mask=key_mask)
    expected_y = decoder(x, memory, tgt_mask=mask_to_torch(causal_mask(n)), tgt_is_causal=True,
                         tgt_key_padding_mask=mask_to_torch(key_mask),
                         memory_key_padding_mask=mask_to_torch(memory_mask))
    decoded = DecoderLayer.from_torch(decoder)(x, memory, key_mask=key_mask,
                                               memory_key_mask=memory_mask)
    return ((expected - encoded)[key_mask].abs().max().item(),
            (expected_y - decoded)[key_mask].abs().max().item())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200)
    args = parser.parse_args(argv)
    results = {}
    print(f"torch {torch.__version__}, {args.cases} random cases each; largest |difference|")
    for dtype in (torch.float64, torch.float32):
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            attention = [attention_case(t, dtype, gen) for t in range(args.cases)]
            layers = [layer_case(t, dtype, gen) for t in range(args.cases)]
        row = {
            "MultiHeadAttention output": max(a for a, _ in attention),
            "MultiHeadAttention weights": max(w for _, w in attention),
            "EncoderLayer output": max(e for e, _ in layers),
            "DecoderLayer output": max(d for _, d in layers),
        }
        results[str(dtype).removeprefix("torch.")] = row
        for name, value in row.items():
            print(f"{str(dtype).removeprefix('torch.'):>8} {name:<28} {value:.2e}")
    return results


if __name__ == "__main__":
    main()
