"""Time and memory of tinyformer.dot_product_attention beside PyTorch's
scaled_dot_product_attention, as ratios measured in one run.

    python benchmarks/attention.py                       # CPU, float32, small sizes
    python benchmarks/attention.py --device cuda --dtype bfloat16 --lengths 1024 4096 16384
    python benchmarks/attention.py --compile             # add our fast path under torch.compile

Each row times one case on the same inputs: our fast path (no weights), our
explicit path (``return_weights=True``, which builds the (n, n) weight matrix)
and PyTorch's fused kernel, forward and forward+backward; with ``--compile``, also
our fast path under ``torch.compile(dynamic=True)`` (compiled once, before the
timings, for all lengths). A ratio above 1 means
we are slower or use more memory than PyTorch. Peak memory is read from the CUDA
allocator, so it is reported on CUDA only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from tinyformer import dot_product_attention, padding_mask

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_inputs(args: argparse.Namespace, n: int, masked: bool):
    """Random (query, key, value, mask) of shape (batch, heads, n, head_dim)."""
    shape = (args.batch, args.heads, n, args.head_dim)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    query, key, value = (
        torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3)
    )
    mask = None
    if masked:  # every sequence loses a different number of padded keys
        lengths = torch.linspace(n // 2, n, args.batch, device=device).long()
        mask = padding_mask(lengths, n)[:, None, None, :]  # (batch, 1, 1, n)
    return query, key, value, mask


def measure(step: Callable[[], object], device: torch.device, min_time: float):
    """Median seconds of ``step`` and, on CUDA, its peak memory in bytes.

    A case that runs out of memory is reported as ``(inf, None)``.
    """
    try:
        return _measure(step, device, min_time)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return float("inf"), None


def _measure(step: Callable[[], object], device: torch.device, min_time: float):
    step()  # warm-up: kernels chosen, memory pools filled
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    timer = benchmark.Timer(stmt="step()", globals={"step": step})
    return timer.blocked_autorange(min_run_time=min_time).median, peak


def cases(query, key, value, mask, backward: bool, compiled: Callable | None = None):
    """The implementations, as steps that run forward (and backward)."""

    def run(forward):
        def step():
            output = forward()
            if backward:
                output.sum().backward()
                query.grad = key.grad = value.grad = None
            return output

        return step

    steps = {
        "pytorch sdpa": run(
            lambda: F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        ),
        "ours, fast path": run(lambda: dot_product_attention(query, key, value, mask)),
        "ours, with weights": run(
            lambda: dot_product_attention(query, key, value, mask, return_weights=True)[0]
        ),
    }
    if compiled is not None:
        steps["ours, compiled"] = run(lambda: compiled(query, key, value, mask))
    return steps


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per timing")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    compiled = None
    if args.compile:
        compiled = torch.compile(dot_product_attention, dynamic=True)

    print(
        f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
        f"{args.dtype}, batch {args.batch}, heads {args.heads}, head_dim {args.head_dim}, "
        f"torch {torch.__version__}"
    )
    header = f"{'n':>6} {'mask':>5} {'pass':>8} {'implementation':>19} {'ms':>9} {'x time':>7}"
    print(header + f" {'MiB':>9} {'x mem':>6}")
    rows = []
    for n in args.lengths:
        for masked in (False, True):
            for backward in (False, True):
                inputs = make_inputs(args, n, masked)
                results = {
                    name: measure(step, device, args.min_time)
                    for name, step in cases(*inputs, backward, compiled).items()
                }
                base_time, base_memory = results["pytorch sdpa"]
                for name, (seconds, memory) in results.items():
                    row = {
                        "n": n,
                        "masked": masked,
                        "backward": backward,
                        "implementation": name,
                        "ms": seconds * 1e3,
                        "time_ratio": seconds / base_time,
                        "mib": None if memory is None else memory / 2**20,
                        "memory_ratio": None
                        if memory is None or not base_memory
                        else memory / base_memory,
                    }
                    rows.append(row)
                    mib = "n/a" if row["mib"] is None else f"{row['mib']:.1f}"
                    ratio = "n/a" if row["memory_ratio"] is None else f"{row['memory_ratio']:.2f}"
                    print(
                        f"{n:>6} {'yes' if masked else 'no':>5} "
                        f"{'fwd+bwd' if backward else 'fwd':>8} {name:>19} {row['ms']:>9.3f} "
                        f"{row['time_ratio']:>7.2f} {mib:>9} {ratio:>6}"
                    )
    return rows


if __name__ == "__main__":
    main()
