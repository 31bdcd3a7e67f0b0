"""Decoding a trained encoder-decoder (chapter 11): one token at a time.

The source is encoded once; the decoder then runs on the tokens produced so far
and picks the next one: the most probable (greedy search), the best few prefixes
kept side by side (beam search), or a draw from the model's distribution
(sampling), until every sequence has produced ``<eos>`` or ``max_len`` tokens.
With a KV cache each step runs the decoder on the one new token.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._checks import check_int, check_real, check_tensor
from .model import Transformer


@torch.no_grad()
def greedy_decode(
    model: Transformer,
    src: torch.Tensor,
    *,
    max_len: int,
    bos_id: int,
    eos_id: int,
    src_key_mask: torch.Tensor | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """The most probable next token, step by step, for each source sequence.

    Args:
        model: an encoder-decoder with ``encode`` and ``decode``
            (:class:`~tinyformer.Transformer`); decoded in its current mode, so
            call ``model.eval()`` first to switch dropout off.
        src: source token ids.
        max_len: the most tokens to produce per sequence.
        bos_id: the token every target starts with.
        eos_id: the token that ends a target; after it a sequence repeats it.
        src_key_mask: True on the real source tokens.
        use_cache: keep each decoder layer's keys and values (a KV cache), so a
            step runs the decoder on the one new token instead of the whole
            prefix. The tokens are the same either way.

    Shape:
        - src, src_key_mask: ``(batch, n_src)``
        - output: ``(batch, length)``, ``length <= max_len``, without ``<bos>``;
          each row ends at its first ``eos_id`` (then ``eos_id`` to the end)

    Example:
        >>> model = Transformer(10, 10, d_model=16, n_heads=2, n_encoder_layers=1,
        ...                     n_decoder_layers=1, d_ff=32).eval()
        >>> tokens = greedy_decode(model, torch.randint(4, 10, (3, 5)), max_len=6,
        ...                        bos_id=1, eos_id=2)
        >>> tokens.shape[0], tokens.shape[1] <= 6
        (3, True)
    """
    return _decode(model, src, lambda logits: logits.argmax(dim=-1), max_len=max_len,
                   bos_id=bos_id, eos_id=eos_id, src_key_mask=src_key_mask,
                   use_cache=use_cache)


def _decode(
    model: Transformer,
    src: torch.Tensor,
    choose: Callable[[torch.Tensor], torch.Tensor],
    *,
    max_len: int,
    bos_id: int,
    eos_id: int,
    src_key_mask: torch.Tensor | None,
    use_cache: bool,
) -> torch.Tensor:
    """One token at a time, ``choose`` picking each from the last position's
    logits ``(batch, vocab)``; a finished sequence repeats ``eos_id``."""
    src = check_tensor("src", src)
    max_len = check_int("max_len", max_len, minimum=1)
    bos_id, eos_id = check_int("bos_id", bos_id), check_int("eos_id", eos_id)
    memory = model.encode(src, src_key_mask=src_key_mask)
    tokens = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
    cache = model.new_cache() if use_cache else None
    for _ in range(max_len):
        new = tokens[:, -1:] if use_cache else tokens  # with a cache: the last token only
        logits = model.decode(new, memory, src_key_mask=src_key_mask, cache=cache)[:, -1]
        next_token = torch.where(finished, eos_id, choose(logits))
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        finished |= next_token == eos_id
        if bool(finished.all()):
            break
    return tokens[:, 1:]

def _keep_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """``logits`` with -inf outside the smallest set of tokens whose probability
    reaches ``top_p`` (the most probable token always stays)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # the probability of the tokens ranked above
    drop_sorted = before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@torch.no_grad()
def sample(
    model: Transformer,
    src: torch.Tensor,
    *,
    max_len: int,
    bos_id: int,
    eos_id: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    src_key_mask: torch.Tensor | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Draw each next token from the model's distribution, step by step.

    Args:
        model, src, max_len, bos_id, eos_id, src_key_mask, use_cache: as
            :func:`greedy_decode`'s.
        temperature: divides the logits: below 1 sharper, above 1 flatter.
        top_k: draw only among the ``top_k`` most probable tokens, exactly
            ``top_k`` of them when some tie (1 is greedy).
        top_p: draw only among the most probable tokens whose probabilities sum
            to at least ``top_p`` (nucleus sampling).
        generator: the random generator, on ``src``'s device, for a reproducible
            draw.

    Shape:
        As :func:`greedy_decode`'s.

    Example:
        >>> model = Transformer(10, 10, d_model=16, n_heads=2, n_encoder_layers=1,
        ...                     n_decoder_layers=1, d_ff=32).eval()
        >>> src = torch.randint(4, 10, (3, 5))
        >>> draw = lambda: sample(model, src, max_len=6, bos_id=1, eos_id=2,
        ...                       generator=torch.Generator().manual_seed(0))
        >>> torch.equal(draw(), draw())
        True
    """
    temperature = check_real("temperature", temperature)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if top_k is not None:
        top_k = check_int("top_k", top_k, minimum=1)
    if top_p is not None:
        top_p = check_real("top_p", top_p)
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")

    def draw(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float() / temperature
        if top_k == 1:  # greedy, ties going to the first token as in argmax
            return logits.argmax(dim=-1)
        if top_k is not None and top_k < logits.shape[-1]:
            # exactly top_k tokens, even when several tie with the k-th
            keep = logits.topk(top_k, dim=-1).indices
            kept = logits.gather(-1, keep)
            logits = torch.full_like(logits, float("-inf")).scatter(-1, keep, kept)
        if top_p is not None:
            logits = _keep_top_p(logits, top_p)
        return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)[:, 0]

    return _decode(model, src, draw, max_len=max_len, bos_id=bos_id, eos_id=eos_id,
                   src_key_mask=src_key_mask, use_cache=use_cache)

def _length_penalty(length: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's ``((5 + length) / 6) ** alpha``: 1 at length 1, and no penalty at 0."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(
    model: Transformer,
    src: torch.Tensor,
    *,
    max_len: int,
    bos_id: int,
    eos_id: int,
    beam_size: int = 4,
    length_penalty: float = 0.6,
    src_key_mask: torch.Tensor | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Keep the ``beam_size`` most probable prefixes at every step; return the best
    finished one per source.

    Each step extends every kept prefix by every token and keeps the
    ``beam_size`` best extensions by total log-probability; a prefix that has
    produced ``eos_id`` only extends by ``eos_id``, at no cost. At the end the
    prefixes are ranked by log-probability divided by GNMT's length penalty
    ``((5 + length) / 6) ** length_penalty`` (0 ranks by log-probability alone).
    With ``beam_size=1`` this is greedy decoding.

    The penalty ranks the final beam only: during the search prefixes compete by
    raw log-probability, and a finished prefix keeps its place in the beam (GNMT
    and fairseq instead set finished hypotheses aside and compare them with the
    penalty applied). So the beam, and the candidates, are the same for every
    ``length_penalty``; only the choice among them changes.

    Args:
        model, src, max_len, bos_id, eos_id, src_key_mask, use_cache: as
            :func:`greedy_decode`'s.
        beam_size: how many prefixes to keep.
        length_penalty: the exponent ``alpha`` of the length penalty.

    Shape:
        As :func:`greedy_decode`'s.

    Example:
        >>> model = Transformer(10, 10, d_model=16, n_heads=2, n_encoder_layers=1,
        ...                     n_decoder_layers=1, d_ff=32).eval()
        >>> src = torch.randint(4, 10, (3, 5))
        >>> best = beam_search(model, src, max_len=6, bos_id=1, eos_id=2, beam_size=3)
        >>> best.shape[0]
        3
    """
    src = check_tensor("src", src)
    max_len = check_int("max_len", max_len, minimum=1)
    bos_id, eos_id = check_int("bos_id", bos_id), check_int("eos_id", eos_id)
    k = check_int("beam_size", beam_size, minimum=1)
    alpha = check_real("length_penalty", length_penalty)
    batch, device = src.shape[0], src.device
    memory = model.encode(src, src_key_mask=src_key_mask).repeat_interleave(k, dim=0)
    mask = None if src_key_mask is None else src_key_mask.repeat_interleave(k, dim=0)
    tokens = torch.full((batch * k, 1), bos_id, dtype=torch.long, device=device)
    # Every beam starts as the same prefix: only the first one may be extended.
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, device=device)
    cache = model.new_cache() if use_cache else None
    offsets = (torch.arange(batch, device=device) * k)[:, None]  # (batch, 1)
    for _ in range(max_len):
        new = tokens[:, -1:] if use_cache else tokens
        logits = model.decode(new, memory, src_key_mask=mask, cache=cache)[:, -1]
        log_probs = logits.float().log_softmax(dim=-1)  # (batch * k, vocab)
        vocab = log_probs.shape[-1]
        ended = torch.full_like(log_probs, float("-inf"))
        ended[:, eos_id] = 0.0  # a finished prefix only repeats eos, for free
        log_probs = torch.where(finished[:, None], ended, log_probs)
        candidates = (scores[:, :, None] + log_probs.view(batch, k, vocab)).view(batch, -1)
        scores, best = candidates.topk(k, dim=-1)  # (batch, k)
        rows = (offsets + torch.div(best, vocab, rounding_mode="floor")).view(-1)
        next_token = (best % vocab).view(-1)
        tokens = torch.cat([tokens[rows], next_token[:, None]], dim=1)
        lengths = lengths[rows] + (~finished[rows]).float()
        finished = finished[rows] | (next_token == eos_id)
        if cache is not None:
            # A source's beams share one memory, and `rows` stays within each
            # source's beams, so only the self-attention caches need reordering.
            for own, _memory_cache in cache:
                own.reorder(rows)
        if bool(finished.all()):
            break
    ranked = scores / _length_penalty(lengths.view(batch, k), alpha)
    choice = offsets[:, 0] + ranked.argmax(dim=-1)
    return tokens[choice, 1:]
