"""Train chapter 10's translator from the command line, in one process or in many.

    python -m tinyformer.train --profile smoke
    torchrun --nproc_per_node=2 -m tinyformer.train --profile cpu --checkpoint run.pt

Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``) every
process joins one group (NCCL on GPUs, Gloo on CPUs), draws the same global batch
and trains on its own slice of it; ``DistributedDataParallel`` averages the
gradients. The loss is the mean over the *global* batch's real target tokens:
each process divides its sum by the token count summed over all processes (not
its own count: the processes hold different numbers of tokens), so the gradients
equal one process's on the whole batch. Only rank 0 shows progress, evaluates,
prints and writes the checkpoint. The run ends with the line
``held-out exact match: X.XX``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .data import (
    Batch,
    TranslationData,
    Vocabulary,
    collate,
    number_pairs,
    read_parallel,
    split_numbers,
)
from .model import Transformer
from .training import (
    default_precision,
    exact_match,
    has_bf16,
    make_optimizer,
    save_checkpoint,
    seed_everything,
    translation_loss,
)

# Per profile: the model, the run and the data (chapter 10's sizes).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"d_model": 32, "layers": 1, "heads": 4, "dropout": 0.0, "steps": 100,
              "batch_size": 64, "lr": 2.0, "warmup": 40, "n_train": 2_000, "n_test": 200},
    "cpu": {"d_model": 64, "layers": 2, "heads": 4, "dropout": 0.1, "steps": 1_800,
            "batch_size": 128, "lr": 2.0, "warmup": 200, "n_train": 20_000, "n_test": 1_000},
    "gpu": {"d_model": 128, "layers": 2, "heads": 4, "dropout": 0.1, "steps": 2_000,
            "batch_size": 256, "lr": 2.0, "warmup": 400, "n_train": 50_000, "n_test": 5_000},
}
PRECISIONS = ("fp32", "bf16", "fp16")
LABEL_SMOOTHING, CLIP_NORM = 0.1, 1.0


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2.

    Example:
        >>> main(["--profile", "smoke", "--steps", "0"])  # stderr: --steps must be ...
        2
    """


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options, with each profile's defaults filled in where none is given.

    Example:
        >>> args = parse_args(["--profile", "smoke", "--steps", "3"])
        >>> args.steps, args.d_model, args.batch_size  # given, then the profile's
        (3, 32, 64)
    """
    parser = argparse.ArgumentParser(
        prog="python -m tinyformer.train", description=__doc__.split("\n\n")[0],
    )

    def by_profile(name: str) -> str:
        values = ", ".join(f"{p} {PROFILES[p][name]}" for p in PROFILES)
        return f"(default by profile: {values})"

    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="the sizes of chapter 10 (default: gpu with CUDA, else cpu)")
    parser.add_argument("--d-model", type=int, help=f"model width {by_profile('d_model')}")
    parser.add_argument("--layers", type=int,
                        help=f"layers per stack {by_profile('layers')}")
    parser.add_argument("--heads", type=int, help=f"attention heads {by_profile('heads')}")
    parser.add_argument("--dropout", type=float, help=f"dropout {by_profile('dropout')}")
    parser.add_argument("--steps", type=int,
                        help=f"total training steps, resumed ones included "
                             f"{by_profile('steps')}")
    parser.add_argument("--batch-size", type=int,
                        help=f"the GLOBAL batch in sentence pairs, split across processes "
                             f"{by_profile('batch_size')}")
    parser.add_argument("--lr", type=float,
                        help=f"the factor on the paper's schedule {by_profile('lr')}")
    parser.add_argument("--warmup", type=int, help=f"warm-up steps {by_profile('warmup')}")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data, the model and the order (default 0)")
    parser.add_argument("--accumulate", type=int, default=1,
                        help="split each process's slice into this many micro-batches, "
                             "one backward pass each, one optimizer step: a global batch "
                             "too large for memory, the same gradient (default 1)")
    parser.add_argument("--precision", default=None,
                        help="fp32, bf16 or fp16 (default: bf16 on a GPU that has it, "
                             "else fp32)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (default: off)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="write the model, optimizer, schedule, step and vocabularies "
                             "here at the end (rank 0, atomically; default: none)")
    parser.add_argument("--resume", type=Path, default=None,
                        help="continue the run saved in this checkpoint (default: none)")
    parser.add_argument("--data", type=Path, default=None,
                        help="a parallel corpus, one 'source<TAB>target' pair per line, "
                             "instead of chapter 10's numbers (a tenth is held out; default: "
                             "the numbers)")
    # not --log: torchrun reads abbreviated options anywhere on its line, and --log
    # would be an ambiguous start of its own --log-dir and --logs-specs
    parser.add_argument("--metrics", type=Path, default=None,
                        help="rank 0 writes one JSON line per step here: step, global "
                             "mean loss, learning rate, seconds (default: none)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (default: a bar on rank 0)")
    args = parser.parse_args(argv)
    args.profile = args.profile or ("gpu" if torch.cuda.is_available() else "cpu")
    for name, value in PROFILES[args.profile].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    return args


def check_args(args: argparse.Namespace, world_size: int, device: torch.device) -> None:
    """Raise UsageError for options that cannot run here.

    Example:
        >>> args = parse_args(["--profile", "smoke"])
        >>> check_args(args, world_size=1, device=torch.device("cpu"))
        >>> args.precision  # filled in for the device
        'fp32'
        >>> check_args(parse_args(["--heads", "3", "--d-model", "32"]), 1, torch.device("cpu"))
        Traceback (most recent call last):
            ...
        tinyformer.train.UsageError: --heads (3) must divide --d-model (32)
    """
    for name in ("d_model", "layers", "heads", "steps", "batch_size", "warmup", "accumulate"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, "
                             f"got {getattr(args, name)}")
    if args.d_model % args.heads:
        raise UsageError(f"--heads ({args.heads}) must divide --d-model ({args.d_model})")
    if not 0.0 <= args.dropout < 1.0:
        raise UsageError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.batch_size < world_size or args.batch_size % world_size:
        raise UsageError(
            f"--batch-size is the global batch ({args.batch_size} sentence pairs): it must "
            f"be a multiple of the {world_size} processes, each taking an equal slice")
    if (args.batch_size // world_size) % args.accumulate:
        raise UsageError(
            f"--accumulate {args.accumulate} must divide each process's slice of the "
            f"global batch ({args.batch_size} pairs / {world_size} processes = "
            f"{args.batch_size // world_size})")
    args.precision = args.precision or default_precision(device)
    if args.precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, "
                         f"got {args.precision!r}")
    if args.precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA GPU (use fp32 or bf16 on a CPU)")
    if args.precision == "bf16" and device.type == "cuda" and not has_bf16(device):
        raise UsageError("--precision bf16: this GPU has no native bfloat16 (compute "
                         "capability below 8.0); use fp16 or fp32")
    for name in ("resume", "data"):
        path = getattr(args, name)
        if path is not None and not path.is_file():
            raise UsageError(f"--{name} {path}: no such file")


def load_pairs(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(training pairs, held-out pairs): chapter 10's numbers, or a corpus file.

    Example:
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = Path(folder.name, "pairs.tsv")  # a corpus of 20 pairs
        >>> _ = path.write_text("".join(f"{s}\\t{t}\\n" for s, t in number_pairs(range(20))))
        >>> train_pairs, test_pairs = load_pairs(parse_args(["--data", str(path)]))
        >>> len(train_pairs), len(test_pairs)  # a tenth is held out
        (18, 2)
        >>> folder.cleanup()
    """
    if args.data is not None:
        try:
            pairs = read_parallel(args.data)
        except (ValueError, UnicodeDecodeError) as error:
            raise UsageError(f"--data {error}") from None
        if len(pairs) < 2:
            raise UsageError(f"--data {args.data}: at least two pairs are needed")
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(args.seed))
        n_test = max(1, len(pairs) // 10)
        shuffled = [pairs[i] for i in order.tolist()]
        return shuffled[n_test:], shuffled[:n_test]
    drawn, test_numbers = split_numbers(args.n_train, args.n_test, seed=args.seed)
    taken = set(drawn) | set(test_numbers)
    short = [x for x in range(1, 1_000) if x not in taken]  # chapter 10: all short ones
    return number_pairs(drawn + short), number_pairs(test_numbers)


def global_batches(data: TranslationData, batch_size: int, seed: int) -> Iterator[Batch]:
    """Full global batches, one shuffled pass after another, the same in every
    process (the last, incomplete batch of a pass is dropped).

    Shape:
        - each :class:`~tinyformer.data.Batch`: ``src``, ``src_key_mask``
          ``(batch_size, n_src)`` and ``tgt_in``, ``tgt_out``, ``tgt_key_mask``
          ``(batch_size, n_tgt)``, padded to that batch's longest sentences

    Example:
        >>> pairs = number_pairs(range(10))
        >>> data = TranslationData(pairs, Vocabulary.build(s for s, _ in pairs),
        ...                        Vocabulary.build(t for _, t in pairs))
        >>> batches = global_batches(data, batch_size=4, seed=0)
        >>> [next(batches).src.shape[0] for _ in range(3)]  # 2 per pass of 10 pairs
        [4, 4, 4]
    """
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(data), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            pairs = [data.encoded[i] for i in order[start:start + batch_size]]
            yield collate(pairs, data.tgt_vocab.pad_id)


def my_slice(batch: Batch, rank: int, world_size: int) -> Batch:
    """This process's rows of the global batch (its padding is harmless: masked).

    Shape:
        - batch: ``(batch, n_src)`` and ``(batch, n_tgt)`` fields
        - output: the same fields, rows ``rank * rows`` to ``(rank + 1) * rows``
          with ``rows = batch // world_size``: ``(rows, n_src)``, ``(rows, n_tgt)``

    Example:
        >>> batch = collate([([5, 2], [1, 7, 2])] * 4)  # 4 pairs
        >>> my_slice(batch, rank=1, world_size=2).src.shape  # rows 2 and 3
        torch.Size([2, 2])
    """
    rows = batch.src.shape[0] // world_size
    part = slice(rank * rows, (rank + 1) * rows)
    return Batch(*(getattr(batch, name)[part] for name in batch.__dataclass_fields__))


def setup_process_group() -> tuple[int, int, torch.device]:
    """(rank, world size, device), joining torchrun's group when there is one.

    Example:
        >>> rank, world_size, device = setup_process_group()  # not under torchrun
        >>> rank, world_size
        (0, 1)
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    return dist.get_rank(), dist.get_world_size(), device


def all_reduce_sum(value: torch.Tensor, world_size: int) -> torch.Tensor:
    """The sum of ``value`` over all processes (itself in one process).

    Shape:
        - value: any shape, the same in every process
        - output: the same shape as ``value``

    Example:
        >>> all_reduce_sum(torch.tensor([3.0, 4.0]), world_size=1)  # one process
        tensor([3., 4.])
    """
    if world_size > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def training_step(
    trained: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    *,
    precision: str = "fp32",
    world_size: int = 1,
    accumulate: int = 1,
    forward: Callable[..., torch.Tensor] | None = None,
) -> Callable[[Batch], torch.Tensor]:
    """The command's training step: ``step(batch)`` trains on this process's slice
    of a global batch and returns the global batch's mean loss.

    Each process's loss is the sum over its real target tokens, divided by the
    real target tokens of the whole global batch (all-reduced) and multiplied by
    ``world_size``, because ``DistributedDataParallel`` averages the processes'
    gradients: the gradients are one process's on the whole batch. With
    ``accumulate`` above 1 the slice is cut into that many micro-batches, each
    with its own forward and backward pass (their gradients add up; DDP
    synchronises after the last only), then come one clipped optimizer step and
    one schedule step. ``precision`` is ``"fp32"``, or ``"bf16"`` or ``"fp16"``
    autocast (fp16 with a gradient scaler). ``forward`` calls the model (a
    compiled ``trained``, say; default ``trained`` itself).

    The model is not given the target's padding mask: targets are padded on the
    right (:func:`~tinyformer.data.collate`), so the causal mask alone hides every
    padding key from every real query, and the decoder's self-attention is purely
    causal (``is_causal``: on a GPU, SDPA's causal kernel instead of a masked
    one). Every other sub-layer works position by position, so no real position
    ever reads a padded one: the real logits and every gradient are unchanged;
    only the padded positions' outputs change, and the loss ignores them.

    Shape:
        - batch: ``src``, ``src_key_mask`` ``(rows, n_src)``; ``tgt_in``,
          ``tgt_out``, ``tgt_key_mask`` ``(rows, n_tgt)``; ``rows`` a multiple of
          ``accumulate``; ``tgt_key_mask`` padded on the right (True, then False,
          along each row)
        - output: a float64 scalar (no gradient), the global batch's mean loss

    Example:
        >>> from tinyformer.training import make_optimizer
        >>> model = Transformer(12, 12, d_model=16, n_heads=2, n_encoder_layers=1,
        ...                     n_decoder_layers=1, d_ff=32)
        >>> optimizer, schedule = make_optimizer(model, d_model=16, warmup=10)
        >>> step = training_step(model, optimizer, schedule, accumulate=2)
        >>> batch = collate([([5, 6, 2], [1, 7, 8, 2]), ([5, 2], [1, 9, 2])])
        >>> loss = step(batch)  # two micro-batches of one pair, one Adam step
        >>> loss.dtype, schedule.last_epoch
        (torch.float64, 1)
    """
    forward = trained if forward is None else forward
    device = next(trained.parameters()).device
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16"
                               else torch.float16)
                if precision != "fp32" else nullcontext())
    no_sync = trained.no_sync if isinstance(trained, DistributedDataParallel) else nullcontext

    def step(batch: Batch) -> torch.Tensor:
        rows = batch.src.shape[0]
        if rows % accumulate:
            raise ValueError(f"batch must have a multiple of accumulate ({accumulate}) "
                             f"rows, got {rows}")
        tokens = all_reduce_sum(batch.tgt_key_mask.sum().to(torch.float64), world_size)
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64, device=tokens.device)
        for index in range(accumulate):
            part = my_slice(batch, index, accumulate)  # micro-batch `index`
            with no_sync() if index < accumulate - 1 else nullcontext():
                with autocast:  # no tgt_key_mask: right padding, see above
                    logits = forward(part.src, part.tgt_in, src_key_mask=part.src_key_mask)
                token_sum = translation_loss(logits, part.tgt_out, part.tgt_key_mask,
                                             label_smoothing=LABEL_SMOOTHING, reduction="sum")
                # DDP averages gradients over processes, so each process's share of
                # the global mean is multiplied by the number of processes.
                loss = token_sum * (world_size / tokens.to(token_sum.dtype))
                scaler.scale(loss).backward()
            total += token_sum.detach().double()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trained.parameters(), CLIP_NORM)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        return all_reduce_sum(total, world_size) / tokens

    return step


def run(args: argparse.Namespace, rank: int, world_size: int, device: torch.device) -> dict:
    """Train, evaluate on rank 0, save; returns what rank 0 measured.

    Example:
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = Path(folder.name, "pairs.tsv")  # a corpus of 20 pairs
        >>> _ = path.write_text("".join(f"{s}\\t{t}\\n" for s, t in number_pairs(range(20))))
        >>> args = parse_args(["--profile", "smoke", "--steps", "2", "--batch-size", "4",
        ...                    "--data", str(path)])
        >>> result = run(args, 0, 1, torch.device("cpu"))  # doctest: +ELLIPSIS
        held-out exact match: ...
        >>> result["step"], len(result["losses"]), sorted(result)
        (2, 2, ['exact_match', 'losses', 'step'])
        >>> folder.cleanup()
    """
    check_args(args, world_size, device)
    seed_everything(args.seed)
    train_pairs, test_pairs = load_pairs(args)
    src_vocab = Vocabulary.build(src for src, _ in train_pairs)
    tgt_vocab = Vocabulary.build(tgt for _, tgt in train_pairs)
    step = 0
    resumed = _load_resume(args, device) if args.resume is not None else None
    if resumed is not None:
        if resumed["src_vocab"] != src_vocab or resumed["tgt_vocab"] != tgt_vocab:
            raise UsageError(f"--resume {args.resume}: its vocabularies are not this data's "
                             "(another --data, --seed or profile?)")
        config = resumed["config"]
    else:
        config = {"src_vocab_size": len(src_vocab), "tgt_vocab_size": len(tgt_vocab),
                  "d_model": args.d_model, "n_heads": args.heads,
                  "n_encoder_layers": args.layers, "n_decoder_layers": args.layers,
                  "d_ff": 4 * args.d_model, "dropout": args.dropout}
    torch.manual_seed(args.seed)  # the same initial weights in every process
    model = Transformer(**config, device=device)
    optimizer, schedule = make_optimizer(model, d_model=model.d_model, warmup=args.warmup,
                                         scale=args.lr)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        schedule.load_state_dict(resumed["schedule"])
        step = resumed["step"]
    trained: torch.nn.Module = model
    if world_size > 1:
        trained = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(trained) if args.compile else trained
    if len(train_pairs) < args.batch_size:  # not one full global batch: nothing to train on
        raise UsageError(f"--batch-size {args.batch_size} is larger than the "
                         f"{len(train_pairs)} training pairs")
    data = TranslationData(train_pairs, src_vocab, tgt_vocab)
    batches = global_batches(data, args.batch_size, args.seed)
    for _ in range(step):  # a resumed run sees the batches it has not seen yet
        next(batches)
    step_once = training_step(trained, optimizer, schedule, precision=args.precision,
                              world_size=world_size, accumulate=args.accumulate,
                              forward=forward)
    if args.quiet:  # the plain bar, disabled: tqdm.auto warns in a kernel without widgets
        from tqdm.std import tqdm  # type: ignore[import-untyped]
    else:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

    bar = tqdm(range(step + 1, args.steps + 1), disable=rank != 0 or args.quiet,
               desc="training", unit="step")
    log = args.metrics.open("a") if args.metrics is not None and rank == 0 else None
    start = time.perf_counter()
    losses = []
    for step in bar:
        # Dropout draws from a stream fixed by (seed, rank, step): each process its
        # own, and a resumed run draws what the straight run drew.
        torch.manual_seed(((args.seed * 1_000_003 + rank) * 1_000_003 + step) % 2**63)
        trained.train()
        batch = my_slice(next(batches), rank, world_size).to(device)
        lr = optimizer.param_groups[0]["lr"]
        mean_loss = step_once(batch)
        losses.append(mean_loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.2e}")
        if log is not None:
            log.write(json.dumps({"step": schedule.last_epoch, "loss": losses[-1], "lr": lr,
                                  "seconds": time.perf_counter() - start}) + "\n")
    bar.close()
    if log is not None:
        log.close()
    result: dict[str, Any] = {"losses": losses, "step": args.steps}
    if rank == 0:
        model.eval()
        result["exact_match"] = exact_match(
            model, TranslationData(test_pairs, src_vocab, tgt_vocab))
        if args.checkpoint is not None:
            save_checkpoint(args.checkpoint, model=model, optimizer=optimizer,
                            schedule=schedule, step=args.steps, src_vocab=src_vocab,
                            tgt_vocab=tgt_vocab)
        print(f"held-out exact match: {result['exact_match']:.2f}")
    if world_size > 1:
        dist.barrier()  # the checkpoint is written before any process leaves
    return result


def _load_resume(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The saved run, checked to be one of ours."""
    try:
        state = torch.load(args.resume, map_location=device, weights_only=True)
    except Exception as error:  # a foreign or damaged file: say so, no traceback
        raise UsageError(f"--resume {args.resume}: not a tinyformer checkpoint "
                         f"({type(error).__name__})") from None
    needed = {"config", "model", "optimizer", "schedule", "step", "src_vocab", "tgt_vocab"}
    if not isinstance(state, dict) or not needed <= set(state):
        raise UsageError(f"--resume {args.resume}: not a training checkpoint of "
                         f"tinyformer.train (it needs {', '.join(sorted(needed))})")
    state["src_vocab"] = Vocabulary(state["src_vocab"])
    state["tgt_vocab"] = Vocabulary(state["tgt_vocab"])
    return state


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; the exit status: 0, 2 for bad input, 130 on Ctrl-C.

    Example:
        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = Path(folder.name, "pairs.tsv")  # a corpus of 20 pairs
        >>> _ = path.write_text("".join(f"{s}\\t{t}\\n" for s, t in number_pairs(range(20))))
        >>> main(["--profile", "smoke", "--steps", "2", "--batch-size", "4",
        ...       "--data", str(path)])  # doctest: +ELLIPSIS
        held-out exact match: ...
        0
        >>> folder.cleanup()
    """
    args = parse_args(argv)
    status = 0
    try:
        rank, world_size, device = setup_process_group()
        try:
            run(args, rank, world_size, device)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    return status


if __name__ == "__main__":
    sys.exit(main())

