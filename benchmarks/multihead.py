"""Time of tinyformer.MultiHeadAttention beside torch.nn.MultiheadAttention, as
ratios measured in one process on the same inputs and the same weights.

    python benchmarks/multihead.py                              # CPU, float32
    python benchmarks/multihead.py --device cuda --dtype bfloat16
    python benchmarks/multihead.py --smoke                      # tiny sizes (the test)

Cases (self-attention, no mask): inference and forward+backward at batch 16,
length 256, d_model 256, 8 heads; forward+backward at batch 1, length 2048. A
ratio below 1 means ours is faster. The two modules are timed in alternation,
several rounds, and each keeps its fastest round, so that a busy machine slows
both alike.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn
from torch.utils import benchmark

from tinyformer import MultiHeadAttention

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# (name, batch, length, d_model, heads, backward)
CASES = [
    ("inference", 16, 256, 256, 8, False),
    ("fwd+bwd", 16, 256, 256, 8, True),
    ("fwd+bwd", 1, 2048, 256, 8, True),
]
SMOKE_CASES = [
    ("inference", 2, 16, 32, 4, False),
    ("fwd+bwd", 2, 16, 32, 4, True),
    ("fwd+bwd", 1, 64, 32, 4, True),
]


def steps(batch: int, length: int, d_model: int, heads: int, backward: bool, device, dtype):
    """One step of each module on the same input, as closures."""
    torch_attention = nn.MultiheadAttention(
        d_model, heads, batch_first=True, device=device, dtype=dtype
    )
    ours = MultiHeadAttention.from_torch(torch_attention)
    x = torch.randn(batch, length, d_model, device=device, dtype=dtype)
    x.requires_grad_(backward)

    def run(forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            if backward:
                forward().sum().backward()
                x.grad = None
            else:
                with torch.inference_mode():
                    forward()

        return step

    if not backward:
        torch_attention.eval()
        ours.eval()
    return {
        "pytorch": run(lambda: torch_attention(x, x, x, need_weights=False)[0]),
        "ours": run(lambda: ours(x)),
    }


def fastest_round(step: Callable[[], None], min_time: float) -> float:
    timer = benchmark.Timer(stmt="step()", globals={"step": step})
    return timer.blocked_autorange(min_run_time=min_time).median


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per round")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one quick round")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    cases = SMOKE_CASES if args.smoke else CASES
    rounds, min_time = (1, 0.01) if args.smoke else (args.rounds, args.min_time)
    print(f"device {device}, {args.dtype}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'case':>9} {'batch':>5} {'n':>5} {'d_model':>7} {'heads':>5} "
          f"{'pytorch ms':>10} {'ours ms':>8} {'ours/pytorch':>12}")
    rows = []
    for name, batch, length, d_model, heads, backward in cases:
        torch.manual_seed(0)
        pair = steps(batch, length, d_model, heads, backward, device, dtype)
        for step in pair.values():
            step()  # warm-up
        best = {key: float("inf") for key in pair}
        for _ in range(rounds):  # alternate, so that both see the same machine
            for key, step in pair.items():
                best[key] = min(best[key], fastest_round(step, min_time))
        ratio = best["ours"] / best["pytorch"]
        rows.append({"case": name, "batch": batch, "length": length, "ratio": ratio,
                     "pytorch_ms": best["pytorch"] * 1e3, "ours_ms": best["ours"] * 1e3})
        print(f"{name:>9} {batch:>5} {length:>5} {d_model:>7} {heads:>5} "
              f"{best['pytorch'] * 1e3:>10.3f} {best['ours'] * 1e3:>8.3f} {ratio:>12.2f}")
    return rows


if __name__ == "__main__":
    main()
