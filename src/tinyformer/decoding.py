"""Decoding a trained encoder-decoder (chapter 11): one token at a time.

The source is encoded once; the decoder then runs on the tokens produced so far
and the next token is the most probable one (greedy search), until every
sequence has produced ``<eos>`` or ``max_len`` tokens.
"""

from __future__ import annotations

import torch

from ._checks import check_int, check_tensor
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
        next_token = torch.where(finished, eos_id, logits.argmax(dim=-1))
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        finished |= next_token == eos_id
        if bool(finished.all()):
            break
    return tokens[:, 1:]
