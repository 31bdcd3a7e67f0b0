"""Training throughput of tinyformer.Transformer beside torch.nn.Transformer, as
tokens per second measured in one process, with the same weights and batches.

    python benchmarks/transformer.py                              # CPU, a small model
    python benchmarks/transformer.py --device cuda                # the paper's base, bf16
    python benchmarks/transformer.py --device cuda --config small # a GPU under 24 GB
    python benchmarks/transformer.py --smoke                      # tiny sizes (the test)

One training step is the command's (`tinyformer.train.training_step`, as
`python -m tinyformer.train` trains): a forward pass on padded source and
target batches under the `--precision` autocast, the label-smoothed loss over
the real target tokens, a backward pass, clipping, an Adam step with the
paper's schedule. PyTorch's side is `nn.Transformer` between the same scaled
embeddings, sinusoidal positions and tied output layer as ours, and ours copies
its weights (`Encoder.from_torch`, `Decoder.from_torch`); the two are checked
equal before timing. Both get the source's padding mask and a purely causal
target (the step passes no target mask: the padding is on the right).
Throughput counts the real (non-padding) target tokens. The base configuration
takes the paper's batch, about 25,000 source and 25,000 target tokens. A ratio
above 1 means ours is faster. The two are timed in alternation, several rounds,
each keeping its fastest round.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils import benchmark

from tinyformer import Decoder, Encoder, Transformer, mask_to_torch, padding_mask
from tinyformer.data import Batch
from tinyformer.positional import SinusoidalPositionalEncoding
from tinyformer.train import PRECISIONS, training_step
from tinyformer.training import has_bf16, make_optimizer

# name: (vocab, d_model, heads, layers, d_ff, batch, length)
CONFIGS = {
    "small": (1_000, 256, 4, 2, 1_024, 32, 48),
    "base": (37_000, 512, 8, 6, 2_048, 512, 64),  # ~24,800 real tokens a side
    "smoke": (50, 16, 2, 1, 32, 4, 8),
}


class TorchBaseline(nn.Module):
    """nn.Transformer between scaled embeddings with positions and a tied output."""

    def __init__(self, vocab, d_model, heads, layers, d_ff, device, dtype):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.src_embed = nn.Embedding(vocab, d_model, **factory)
        self.tgt_embed = nn.Embedding(vocab, d_model, **factory)
        self.positions = SinusoidalPositionalEncoding(d_model, dropout=0.1)
        self.transformer = nn.Transformer(
            d_model, heads, layers, layers, d_ff, dropout=0.1, batch_first=True, **factory
        )
        # Its nested-tensor path acts only in eval(), where the weights are checked
        # equal, and warns that it is a prototype; training never takes it.
        self.transformer.encoder.use_nested_tensor = False
        self.output = nn.Linear(d_model, vocab, bias=False, **factory)
        self.output.weight = self.tgt_embed.weight

    def forward(self, src, tgt, *, src_key_mask, tgt_key_mask=None):
        """Called as tinyformer.Transformer is; no tgt_key_mask: purely causal."""
        scale = math.sqrt(self.d_model)
        n = tgt.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=tgt.device).triu(1)  # True = ignore
        hidden = self.transformer(
            self.positions(self.src_embed(src) * scale),
            self.positions(self.tgt_embed(tgt) * scale),
            tgt_mask=causal, tgt_is_causal=True,
            src_key_padding_mask=mask_to_torch(src_key_mask),
            tgt_key_padding_mask=None if tgt_key_mask is None else mask_to_torch(tgt_key_mask),
            memory_key_padding_mask=mask_to_torch(src_key_mask),
        )
        return self.output(hidden)


def copy_of(baseline: TorchBaseline, vocab, heads) -> Transformer:
    """Our Transformer with the baseline's weights, final norms included."""
    d_model = baseline.d_model
    transformer = baseline.transformer
    weight = baseline.output.weight
    ours = Transformer(vocab, vocab, d_model=d_model, n_heads=heads,
                       n_encoder_layers=1, n_decoder_layers=1, d_ff=8,
                       device=weight.device, dtype=weight.dtype)
    ours.encoder = Encoder.from_torch(transformer.encoder)
    ours.decoder = Decoder.from_torch(transformer.decoder)
    with torch.no_grad():
        ours.src_embed.weight.copy_(baseline.src_embed.weight)
        ours.tgt_embed.weight.copy_(baseline.tgt_embed.weight)
    return ours.train()


def batch_of(vocab, batch, length, device, gen):
    """Token ids with lengths from half to all of ``length``, and their masks."""
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=gen)
    tokens = torch.randint(vocab, (batch, length + 1), generator=gen).to(device)
    mask = padding_mask(lengths + 1, length + 1).to(device)
    return tokens, mask


def training_steps(config, device, precision):
    vocab, d_model, heads, layers, d_ff, batch, length = config
    torch.manual_seed(0)
    baseline = TorchBaseline(vocab, d_model, heads, layers, d_ff, device, torch.float32)
    ours = copy_of(baseline, vocab, heads)
    gen = torch.Generator().manual_seed(1)
    src, src_key_mask = batch_of(vocab, batch, length, device, gen)
    tgt, tgt_key_mask = batch_of(vocab, batch, length, device, gen)
    pairs = Batch(src[:, :-1], src_key_mask[:, :-1], tgt[:, :-1], tgt[:, 1:],
                  tgt_key_mask[:, 1:])  # padded on the right, as the command's batches

    baseline.eval(), ours.eval()
    with torch.no_grad():
        expected = baseline(pairs.src, pairs.tgt_in, src_key_mask=pairs.src_key_mask)
        got = ours(pairs.src, pairs.tgt_in, src_key_mask=pairs.src_key_mask)
    # Padded query rows are garbage in both; compare the real ones.
    difference = (expected - got)[pairs.tgt_key_mask].abs().max().item()

    def step_of(model: nn.Module) -> Callable[[], object]:
        model.train()
        optimizer, schedule = make_optimizer(model, d_model=d_model, warmup=4000)
        step = training_step(model, optimizer, schedule, precision=precision)
        return lambda: step(pairs)

    steps = {"pytorch": step_of(baseline), "ours": step_of(ours)}
    return steps, pairs.n_target_tokens, difference


def fastest_round(step: Callable[[], None], min_time: float, device) -> float:
    sync = "torch.cuda.synchronize()" if device.type == "cuda" else "pass"
    timer = benchmark.Timer(stmt=f"step(); {sync}", globals={"step": step, "torch": torch})
    return timer.blocked_autorange(min_run_time=min_time).median


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config", choices=sorted(CONFIGS), default=None,
                        help="default: small on the CPU, base on CUDA")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="default: bf16 autocast on CUDA (fp16 where it lacks bf16), "
                             "fp32 on the CPU")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds per round")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one quick round")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = "smoke" if args.smoke else args.config or ("base" if device.type == "cuda" else "small")
    precision = args.precision or (
        ("bf16" if has_bf16(device) else "fp16") if device.type == "cuda"
        else "fp32")
    rounds, min_time = (1, 0.01) if args.smoke else (args.rounds, args.min_time)
    steps, tokens, difference = training_steps(CONFIGS[name], device, precision)
    for step in steps.values():
        step()  # warm-up
    best = {key: float("inf") for key in steps}
    for _ in range(rounds):  # alternate, so that both see the same machine
        for key, step in steps.items():
            best[key] = min(best[key], fastest_round(step, min_time, device))
    per_second = {key: tokens / seconds for key, seconds in best.items()}
    ratio = per_second["ours"] / per_second["pytorch"]
    vocab, d_model, heads, layers, d_ff, batch, length = CONFIGS[name]
    print(f"device {device}, {precision}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"config {name}: vocab {vocab}, d_model {d_model}, {heads} heads, {layers}+{layers} "
          f"layers, d_ff {d_ff}, batch {batch}, length {length}, {tokens} target tokens")
    print(f"largest logit difference before timing (real tokens, eval): {difference:.2e}")
    print(f"{'':>8} {'ms/step':>9} {'tokens/s':>10}")
    for key in steps:
        print(f"{key:>8} {best[key] * 1e3:>9.1f} {per_second[key]:>10.0f}")
    print(f"ours/pytorch throughput: {ratio:.2f}")
    return {"ratio": ratio, "difference": difference, "tokens_per_second": per_second}


if __name__ == "__main__":
    main()
