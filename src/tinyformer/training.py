"""Training an encoder-decoder for translation (chapter 10).

The paper's recipe, from PyTorch's own parts: Adam with betas (0.9, 0.98), the
warm-up schedule through :class:`torch.optim.lr_scheduler.LambdaLR`,
cross-entropy with ``label_smoothing`` over the real target tokens, gradient
clipping, a tqdm progress bar; plus held-out exact match and checkpoints that
load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR

from ._checks import check_int, check_real
from .data import Batch, TranslationData, Vocabulary, pad
from .decoding import greedy_decode
from .masks import padding_mask
from .model import Transformer

PRECISIONS = ("fp32", "bf16")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators (every device).

    Example:
        >>> seed_everything(0)
        >>> first = (random.random(), np.random.rand(), torch.rand(1).item())
        >>> seed_everything(0)
        >>> first == (random.random(), np.random.rand(), torch.rand(1).item())
        True
    """
    seed = check_int("seed", seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def paper_learning_rate(step: int, *, d_model: int, warmup: int) -> float:
    """``d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)``, counting steps from 1:
    a linear rise for ``warmup`` steps, then a decay like ``1/sqrt(step)``.

    Example:
        >>> rates = [paper_learning_rate(s, d_model=512, warmup=4000) for s in (1, 4000, 16000)]
        >>> rates[1] == max(rates), round(rates[1] / rates[2], 6)
        (True, 2.0)
    """
    step = max(check_int("step", step), 1)
    return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def make_optimizer(
    model: torch.nn.Module, *, d_model: int, warmup: int, scale: float = 1.0
) -> tuple[torch.optim.Adam, LambdaLR]:
    """Adam (betas 0.9, 0.98, eps 1e-9) and the paper's schedule times ``scale``.

    Example:
        >>> model = torch.nn.Linear(4, 4)
        >>> optimizer, schedule = make_optimizer(model, d_model=512, warmup=4000)
        >>> optimizer.param_groups[0]["lr"] == paper_learning_rate(1, d_model=512, warmup=4000)
        True
    """
    d_model = check_int("d_model", d_model, minimum=1)
    warmup = check_int("warmup", warmup, minimum=1)
    scale = check_real("scale", scale)
    optimizer = torch.optim.Adam(model.parameters(), lr=scale, betas=(0.9, 0.98), eps=1e-9)
    # LambdaLR multiplies the base rate (`scale`) by the factor of step + 1.
    schedule = LambdaLR(
        optimizer, lambda step: paper_learning_rate(step + 1, d_model=d_model, warmup=warmup)
    )
    return optimizer, schedule


def translation_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """The mean cross-entropy over the real target tokens; padding counts for nothing.

    ``reduction="sum"`` gives the sum over the real tokens instead: across several
    processes, the global mean is the sum of the processes' sums divided by the
    total number of real tokens, not the mean of their means.

    Shape:
        - logits: ``(batch, n_tgt, vocab)``
        - targets, mask: ``(batch, n_tgt)``; mask True on real tokens
        - output: a scalar

    Example:
        >>> logits = torch.zeros(2, 3, 5)  # every token equally likely: loss log 5
        >>> targets = torch.tensor([[4, 2, 0], [3, 0, 0]])  # 0 is <pad>
        >>> loss = translation_loss(logits, targets, targets != 0)
        >>> loss.shape, torch.isclose(loss, torch.tensor(5.0).log()).item()
        (torch.Size([]), True)
    """
    if logits.shape[:-1] != targets.shape or mask.shape != targets.shape:
        raise ValueError(
            "logits must be (batch, n_tgt, vocab) and targets and mask (batch, n_tgt), got "
            f"{tuple(logits.shape)}, {tuple(targets.shape)} and {tuple(mask.shape)}"
        )
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if reduction == "mean" and not bool(mask.any()):  # a mean over no token is NaN
        raise ValueError("mask has no real target token: the mean loss is undefined")
    ignored = torch.where(mask, targets, -100)  # cross_entropy skips -100
    if logits.dtype in (torch.float16, torch.bfloat16):  # the loss in float32 at least
        logits = logits.float()
    return F.cross_entropy(
        logits.flatten(0, 1), ignored.flatten(), label_smoothing=label_smoothing,
        reduction=reduction,
    )


@dataclass
class History:
    """What training recorded: per step, per epoch (a full pass over the data)
    and per evaluation.

    Example:
        >>> history = History(step=[1, 2], loss=[3.5, 3.25])
        >>> history.step[-1], history.loss[-1], history.exact_match
        (2, 3.25, [])
    """

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)  # the epoch of each step, from 0
    epoch_loss: list[float] = field(default_factory=list)  # mean loss of each full epoch
    eval_step: list[int] = field(default_factory=list)
    exact_match: list[float] = field(default_factory=list)


def has_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU of compute
    capability 8.0 or newer (Ampere on), or a ROCm GPU.

    ``torch.cuda.is_bf16_supported()`` also says True on older GPUs such as
    Colab's T4, which emulate bfloat16 slowly and have no bfloat16 attention
    kernels: there, float16 with a gradient scaler is the mixed precision to use.

    Example:
        >>> has_bf16(torch.device("cpu"))  # this book trains in float32 on CPUs
        False
    """
    device = torch.device(device)
    if device.type != "cuda":
        return False
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device) >= (8, 0)


def default_precision(device: torch.device) -> str:
    """bf16 on a GPU that has it natively (:func:`has_bf16`), else fp32.

    Example:
        >>> default_precision(torch.device("cpu"))
        'fp32'
    """
    return "bf16" if has_bf16(device) else "fp32"


def _autocast(device: torch.device, precision: str) -> Any:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _forever(
    data: TranslationData, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[int, Batch]]:
    """(epoch, batch) pairs, one shuffled pass after another."""
    epoch = 0
    while True:
        for batch in data.batches(batch_size, shuffle=True, generator=generator):
            yield epoch, batch
        epoch += 1


def train(
    model: Transformer,
    data: TranslationData,
    *,
    steps: int,
    batch_size: int,
    warmup: int = 4000,
    lr_scale: float = 1.0,
    label_smoothing: float = 0.1,
    clip_norm: float | None = 1.0,
    optimizer: torch.optim.Optimizer | None = None,
    schedule: LambdaLR | None = None,
    precision: str | None = None,
    eval_data: TranslationData | None = None,
    eval_every: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> History:
    """Train ``model`` for ``steps`` steps on shuffled padded batches of ``data``.

    Runs on the model's device. Each step: teacher-forced logits, the loss over
    real target tokens with ``label_smoothing``, backward, gradient clipping to
    ``clip_norm``, an Adam step, a schedule step. Pass ``optimizer`` and
    ``schedule`` to continue a run (e.g. from a checkpoint); otherwise
    :func:`make_optimizer` makes them. With ``eval_data``, held-out exact match is
    measured every ``eval_every`` steps and at the end.

    Returns:
        The :class:`History` of the run.

    Shape:
        - each batch: ``src`` ``(batch_size, n_src)``, ``tgt_in``, ``tgt_out``
          ``(batch_size, n_tgt)`` (the last of a pass may have fewer rows)
        - the model's logits: ``(batch_size, n_tgt, tgt_vocab_size)``

    Example:
        >>> from tinyformer.data import number_pairs
        >>> pairs = number_pairs(range(20))
        >>> src_vocab = Vocabulary.build(s for s, _ in pairs)
        >>> tgt_vocab = Vocabulary.build(t for _, t in pairs)
        >>> data = TranslationData(pairs, src_vocab, tgt_vocab)
        >>> model = Transformer(len(src_vocab), len(tgt_vocab), d_model=16, n_heads=2,
        ...                     n_encoder_layers=1, n_decoder_layers=1, d_ff=32)
        >>> history = train(model, data, steps=2, batch_size=8, warmup=10, progress=False)
        >>> history.step, len(history.loss), history.epoch
        ([1, 2], 2, [0, 0])
    """
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if len(data) == 0:  # else the endless stream of batches would wait forever
        raise ValueError("data must hold at least one sentence pair, got none")
    device = next(model.parameters()).device
    precision = precision or default_precision(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if optimizer is None:
        optimizer, schedule = make_optimizer(
            model, d_model=model.d_model, warmup=warmup, scale=lr_scale
        )
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    batches = _forever(data, batch_size, generator)
    history = History()
    start = time.perf_counter()
    if progress:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]
    else:  # the plain bar: tqdm.auto warns in a notebook without ipywidgets
        from tqdm.std import tqdm  # type: ignore[import-untyped]

    bar = tqdm(range(1, steps + 1), disable=not progress, desc="training", unit="step")
    for step in bar:
        model.train()
        epoch, batch = next(batches)
        batch = batch.to(device)
        if history.epoch and epoch != history.epoch[-1]:  # an epoch ended: its mean
            ended = [x for x, e in zip(history.loss, history.epoch, strict=True) if e == epoch - 1]
            history.epoch_loss.append(sum(ended) / len(ended))
        with _autocast(device, precision):
            logits = model(batch.src, batch.tgt_in, src_key_mask=batch.src_key_mask,
                           tgt_key_mask=batch.tgt_key_mask)
        loss = translation_loss(logits, batch.tgt_out, batch.tgt_key_mask,
                                label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        if schedule is not None:
            schedule.step()
        history.step.append(step)
        history.loss.append(loss.item())
        history.lr.append(lr)
        history.seconds.append(time.perf_counter() - start)
        history.epoch.append(epoch)
        bar.set_postfix(loss=f"{history.loss[-1]:.3f}", lr=f"{lr:.2e}")
        last = step == steps
        if eval_data is not None and (last or (eval_every and step % eval_every == 0)):
            history.eval_step.append(step)
            history.exact_match.append(exact_match(model, eval_data))
    bar.close()
    return history


def translate(
    model: Transformer,
    sentences: list[str],
    src_vocab: Vocabulary,
    tgt_vocab: Vocabulary,
    *,
    batch_size: int = 256,
    max_len: int | None = None,
) -> list[str]:
    """Greedy translations of ``sentences``, in eval mode, on the model's device.

    ``max_len`` defaults to twice the longest source plus ten tokens.

    Example:
        >>> src_vocab, tgt_vocab = Vocabulary(["one", "two"]), Vocabulary(["un", "deux"])
        >>> model = Transformer(len(src_vocab), len(tgt_vocab), d_model=8, n_heads=2,
        ...                     n_encoder_layers=1, n_decoder_layers=1, d_ff=16)
        >>> out = translate(model, ["one", "two one"], src_vocab, tgt_vocab, max_len=5)
        >>> len(out), all(isinstance(sentence, str) for sentence in out)
        (2, True)
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(sentences), batch_size):
        chunk = [src_vocab.encode(s, bos=False) for s in sentences[start:start + batch_size]]
        src = pad(chunk, src_vocab.pad_id).to(device)
        mask = padding_mask(torch.tensor([len(c) for c in chunk]), src.shape[1]).to(device)
        limit = max_len or 2 * src.shape[1] + 10
        tokens = greedy_decode(model, src, max_len=limit, bos_id=tgt_vocab.bos_id,
                               eos_id=tgt_vocab.eos_id, src_key_mask=mask)
        out += [tgt_vocab.decode(row) for row in tokens.cpu()]
    model.train(was_training)
    return out


def exact_match(model: Transformer, data: TranslationData, *, batch_size: int = 256) -> float:
    """The share of ``data``'s pairs whose greedy translation is exactly the target.

    Example:
        >>> src_vocab, tgt_vocab = Vocabulary(["one", "two"]), Vocabulary(["un", "deux"])
        >>> model = Transformer(len(src_vocab), len(tgt_vocab), d_model=8, n_heads=2,
        ...                     n_encoder_layers=1, n_decoder_layers=1, d_ff=16)
        >>> data = TranslationData([("one", "un"), ("two", "deux")], src_vocab, tgt_vocab)
        >>> share = exact_match(model, data)  # untrained: 0, 0.5 or 1 by chance
        >>> isinstance(share, float), 0.0 <= share <= 1.0
        (True, True)
    """
    sources = [src for src, _ in data.pairs]
    predictions = translate(model, sources, data.src_vocab, data.tgt_vocab,
                            batch_size=batch_size)
    targets = [data.tgt_vocab.decode(data.tgt_vocab.encode(t)) for _, t in data.pairs]
    return sum(p == t for p, t in zip(predictions, targets, strict=True)) / max(len(targets), 1)


def save_checkpoint(
    path: str | Path,
    *,
    model: Transformer,
    optimizer: torch.optim.Optimizer | None = None,
    schedule: LambdaLR | None = None,
    step: int = 0,
    src_vocab: Vocabulary | None = None,
    tgt_vocab: Vocabulary | None = None,
) -> None:
    """Write everything needed to rebuild and continue a run, atomically (a
    temporary file, then a rename: a crash never leaves half a checkpoint).

    Example:
        >>> import tempfile
        >>> model = Transformer(7, 9, d_model=8, n_heads=2, n_encoder_layers=1,
        ...                     n_decoder_layers=1, d_ff=16)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     save_checkpoint(Path(folder, "run.pt"), model=model, step=5)
        ...     sorted(os.listdir(folder))  # no temporary file left behind
        ['run.pt']
    """
    state: dict[str, Any] = {
        "config": dict(model.config),
        "model": model.state_dict(),
        "step": check_int("step", step),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if schedule is not None:
        state["schedule"] = schedule.state_dict()  # its lambda is not saved: rebuilt
    for name, vocab in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab)):
        if vocab is not None:
            state[name] = list(vocab.tokens[4:])
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    warmup: int = 4000,
    lr_scale: float = 1.0,
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and rebuild what it holds.

    Returns:
        A dict with ``model`` (a :class:`~tinyformer.Transformer` on ``device``),
        ``step``, and, when saved, ``optimizer`` and ``schedule`` (made by
        :func:`make_optimizer` with ``warmup`` and ``lr_scale``, then restored),
        ``src_vocab`` and ``tgt_vocab`` (:class:`~tinyformer.data.Vocabulary`).

    Example:
        >>> import tempfile
        >>> model = Transformer(7, 9, d_model=8, n_heads=2, n_encoder_layers=1,
        ...                     n_decoder_layers=1, d_ff=16)
        >>> optimizer, schedule = make_optimizer(model, d_model=8, warmup=10)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = Path(folder, "run.pt")
        ...     save_checkpoint(path, model=model, optimizer=optimizer,
        ...                     schedule=schedule, step=5)
        ...     loaded = load_checkpoint(path, warmup=10)
        >>> loaded["step"], sorted(loaded)
        (5, ['model', 'optimizer', 'schedule', 'step'])
        >>> all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
        ...                                       loaded["model"].state_dict().values()))
        True
    """
    state = torch.load(path, map_location=device, weights_only=True)
    model = Transformer(**state["config"], device=device)
    model.load_state_dict(state["model"])
    loaded: dict[str, Any] = {"model": model, "step": state["step"]}
    if "optimizer" in state:
        optimizer, schedule = make_optimizer(
            model, d_model=model.d_model, warmup=warmup, scale=lr_scale
        )
        optimizer.load_state_dict(state["optimizer"])
        if "schedule" in state:
            schedule.load_state_dict(state["schedule"])
        loaded["optimizer"], loaded["schedule"] = optimizer, schedule
    for name in ("src_vocab", "tgt_vocab"):
        if name in state:
            loaded[name] = Vocabulary(state[name])
    return loaded
