"""Peak memory and time of tinyformer.chunked_attention beside the explicit formula
(``return_weights=True``, which builds the (n, n) weights) and PyTorch's fused
scaled_dot_product_attention, as ratios measured in one run.

    python benchmarks/efficient.py                      # CPU, n = 16384, one head, d 64
    python benchmarks/efficient.py --device cuda --dtype bfloat16 --length 65536
    python benchmarks/efficient.py --smoke              # tiny: the test suite runs this

Each case (implementation, forward or forward+backward) runs in a fresh Python
process, so that one case's memory cannot be reused by the next, and
``tinyformer.runtime.peak_memory`` measures it: on the CPU the peak resident size
during the call above the size before (Linux's VmHWM), with glibc's mmap
threshold fixed at 64 KiB (also set here as MALLOC_MMAP_THRESHOLD_=65536) so
that large blocks go back to the system when freed: otherwise the allocator
keeps them and the figure measures malloc, not the algorithm. On CUDA the peak
is the caching allocator's. Bar: the forward
peak of chunked attention at most 1/32 of the explicit formula's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

IMPLEMENTATIONS = ("explicit", "chunked", "pytorch sdpa")
MODES = ("forward", "fwd+bwd")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MEMORY_BAR = 1 / 32  # chunked forward peak / explicit forward peak, at most


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls; the best counts")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the tests")
    parser.add_argument("--case", nargs=2, metavar=("IMPLEMENTATION", "MODE"),
                        help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args(argv)
    if args.smoke:
        args.length, args.head_dim, args.chunk_size, args.repeats = 256, 16, 32, 1
    return args


def run_case(args: argparse.Namespace, implementation: str, mode: str) -> dict:
    """Run one case in this process; return its peak memory and best time."""
    from tinyformer import chunked_attention, dot_product_attention
    from tinyformer.runtime import peak_memory

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    backward = mode == "fwd+bwd"
    generator = torch.Generator().manual_seed(0)

    def inputs(length: int) -> list[torch.Tensor]:
        return [torch.randn(1, 1, length, args.head_dim, generator=generator)
                .to(device=device, dtype=dtype).requires_grad_(backward) for _ in range(3)]

    def call() -> None:
        if implementation == "explicit":
            output = dot_product_attention(query, key, value, return_weights=True)[0]
        elif implementation == "chunked":
            output = chunked_attention(query, key, value, chunk_size=args.chunk_size)
        else:
            output = F.scaled_dot_product_attention(query, key, value)
        if backward:
            output.sum().backward()
        del output
        for x in (query, key, value):
            x.grad = None

    # A first call at a small size loads what every call needs (kernels, thread
    # pools), so that the measured peak is the algorithm's alone.
    query, key, value = inputs(2 * args.chunk_size)
    call()
    query, key, value = inputs(args.length)
    peak = peak_memory(call, device)[1]
    seconds = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return {"implementation": implementation, "mode": mode, "peak_mb": peak / 2**20,
            "ms": 1000 * min(seconds)}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    if args.case:
        print(json.dumps(run_case(args, *args.case)))
        return []
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    options = ["--length", str(args.length), "--head-dim", str(args.head_dim),
               "--chunk-size", str(args.chunk_size), "--device", args.device,
               "--dtype", args.dtype, "--repeats", str(args.repeats)]
    rows = []
    for mode in MODES:
        for implementation in IMPLEMENTATIONS:
            result = subprocess.run(
                [sys.executable, __file__, *options, "--case", implementation, mode],
                env=environment, capture_output=True, text=True, check=True,
            )
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(f"one head, n = {args.length}, d = {args.head_dim}, {args.dtype} on "
          f"{args.device}, chunk {args.chunk_size}")
    print(f"{'mode':8} {'implementation':14} {'peak MB':>9} {'/explicit':>10} "
          f"{'ms':>9} {'/sdpa':>7}")
    for row in rows:
        same_mode = {r["implementation"]: r for r in rows if r["mode"] == row["mode"]}
        explicit, sdpa = same_mode["explicit"], same_mode["pytorch sdpa"]
        row["memory_ratio"] = row["peak_mb"] / max(explicit["peak_mb"], 1e-9)
        row["time_ratio"] = row["ms"] / sdpa["ms"]
        print(f"{row['mode']:8} {row['implementation']:14} {row['peak_mb']:9.1f} "
              f"{row['memory_ratio']:10.4f} {row['ms']:9.1f} {row['time_ratio']:7.2f}")
    chunked = next(r for r in rows if r["implementation"] == "chunked"
                   and r["mode"] == "forward")
    verdict = "met" if chunked["memory_ratio"] <= MEMORY_BAR else "NOT met"
    print(f"bar: chunked forward peak <= 1/{round(1 / MEMORY_BAR)} of explicit's: {verdict} "
          f"(1/{1 / max(chunked['memory_ratio'], 1e-9):.0f})")
    return rows


if __name__ == "__main__":
    main()
