"""The encoder-decoder Transformer (chapter 9).

Source tokens are embedded, scaled by ``sqrt(d_model)``, given sinusoidal
positions and encoded into a *memory*; target tokens are embedded the same way
and decoded, each reading the memory and the targets before it; a linear layer
tied to the target embedding turns each decoded token into logits over the
target vocabulary::

    memory = Encoder(embed(src) * sqrt(d_model) + PE)
    logits = Decoder(embed(tgt) * sqrt(d_model) + PE, memory) E_tgt^T
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._checks import check_int, check_tensor
from .layers import Decoder, Encoder, _check_bool
from .multihead import KVCache
from .positional import SinusoidalPositionalEncoding


class Transformer(nn.Module):
    """The Transformer of *Attention Is All You Need*, batch-first.

    Args:
        src_vocab_size: the number of source tokens.
        tgt_vocab_size: the number of target tokens.
        d_model: the width of every token representation (512 in the paper).
        n_heads: attention heads per layer (8).
        n_encoder_layers, n_decoder_layers: the depth of the two stacks (6 and 6).
        d_ff: the feed-forward networks' hidden width (2048).
        dropout: on the embeddings plus positions, the attention weights, the
            hidden units and every sub-layer's output (0.1).
        norm_first: pre-norm layers, with a final LayerNorm after each stack;
            False is the paper's post-norm.
        activation: ``"relu"`` (the paper) or ``"gelu"``.
        share_embeddings: one embedding table for source and target (the paper's
            shared vocabulary); the two vocabulary sizes must then be equal.
        layer_norm_eps: the LayerNorms' epsilon.
        device: where to make the parameters.
        dtype: the parameters' dtype.

    The output layer is tied to the target embedding: ``logits = h E^T`` with
    the same matrix ``E`` that embeds target tokens. Every matrix starts
    Xavier-uniform, as in the Annotated Transformer: with the tied table drawn
    from N(0, 1) instead, the logits start far too large and training stalls.

    Shape:
        - src: ``(batch, n_src)``, token ids; tgt: ``(batch, n_tgt)``
        - src_key_mask: ``(batch, n_src)``; tgt_key_mask: ``(batch, n_tgt)``;
          bool, **True = real token**
        - memory: ``(batch, n_src, d_model)``
        - logits: ``(batch, n_tgt, tgt_vocab_size)``

    Example:
        >>> model = Transformer(11, 13, d_model=16, n_heads=2, n_encoder_layers=1,
        ...                     n_decoder_layers=1, d_ff=32)
        >>> src, tgt = torch.randint(11, (2, 7)), torch.randint(13, (2, 5))
        >>> model(src, tgt).shape
        torch.Size([2, 5, 13])
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        *,
        d_model: int = 512,
        n_heads: int = 8,
        n_encoder_layers: int = 6,
        n_decoder_layers: int = 6,
        d_ff: int = 2048,
        dropout: float = 0.1,
        norm_first: bool = False,
        activation: str = "relu",
        share_embeddings: bool = False,
        layer_norm_eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        src_vocab_size = check_int("src_vocab_size", src_vocab_size, minimum=1)
        tgt_vocab_size = check_int("tgt_vocab_size", tgt_vocab_size, minimum=1)
        d_model = check_int("d_model", d_model, minimum=2)
        if _check_bool("share_embeddings", share_embeddings) and src_vocab_size != tgt_vocab_size:
            raise ValueError(
                "share_embeddings needs src_vocab_size == tgt_vocab_size, got "
                f"{src_vocab_size} and {tgt_vocab_size}"
            )
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        options: dict[str, Any] = {
            "dropout": dropout, "norm_first": norm_first, "activation": activation,
            "layer_norm_eps": layer_norm_eps, "final_norm": norm_first, **factory,
        }
        self.d_model = d_model
        # What rebuilds this model (a checkpoint stores it): plain numbers and strings.
        self.config: dict[str, Any] = {
            "src_vocab_size": src_vocab_size, "tgt_vocab_size": tgt_vocab_size,
            "d_model": d_model, "n_heads": n_heads, "n_encoder_layers": n_encoder_layers,
            "n_decoder_layers": n_decoder_layers, "d_ff": d_ff, "dropout": dropout,
            "norm_first": norm_first, "activation": activation,
            "share_embeddings": share_embeddings, "layer_norm_eps": layer_norm_eps,
        }
        self.src_embed = nn.Embedding(src_vocab_size, d_model, **factory)
        self.tgt_embed = (
            self.src_embed if share_embeddings
            else nn.Embedding(tgt_vocab_size, d_model, **factory)
        )
        self.positions = SinusoidalPositionalEncoding(d_model, dropout=dropout)
        self.encoder = Encoder(d_model, n_heads, d_ff, n_encoder_layers, **options)
        self.decoder = Decoder(d_model, n_heads, d_ff, n_decoder_layers, **options)
        self.output = nn.Linear(d_model, tgt_vocab_size, bias=False, **factory)
        self.reset_parameters()
        self.output.weight = self.tgt_embed.weight  # tied: one matrix, two uses

    def reset_parameters(self) -> None:
        """Xavier-uniform on every matrix; LayerNorms and biases as PyTorch sets them."""
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def embed_source(self, src: torch.Tensor) -> torch.Tensor:
        """The encoder's input: ``E_src[src] * sqrt(d_model)`` plus the positions."""
        return self._embed(src, self.src_embed, "src")

    def embed_target(self, tgt: torch.Tensor) -> torch.Tensor:
        """The decoder's input: ``E_tgt[tgt] * sqrt(d_model)`` plus the positions."""
        return self._embed(tgt, self.tgt_embed, "tgt")

    def _embed(
        self, tokens: torch.Tensor, table: nn.Embedding, name: str, *, offset: int = 0
    ) -> torch.Tensor:
        tokens = check_tensor(name, tokens)
        if tokens.dim() != 2 or tokens.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"{name} must be token ids of shape (batch, length), int64 or int32, "
                f"got shape {tuple(tokens.shape)} and dtype {tokens.dtype}"
            )
        # nn.Embedding fails deep inside on a bad id (a device-side assert on CUDA);
        # the check reads values, so it runs outside compilation only.
        checkable = not torch.compiler.is_compiling() and tokens.device.type != "meta"
        if checkable and tokens.numel() and (
            tokens.min() < 0 or tokens.max() >= table.num_embeddings
        ):
            raise ValueError(
                f"{name} must hold token ids in [0, {table.num_embeddings}), got ids "
                f"from {tokens.min().item()} to {tokens.max().item()}"
            )
        return self.positions(table(tokens) * math.sqrt(self.d_model), offset=offset)

    def encode(
        self, src: torch.Tensor, *, src_key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The memory: the encoder's output for the source tokens."""
        return self.encoder(self.embed_source(src), key_mask=src_key_mask)

    def decode(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        *,
        tgt_key_mask: torch.Tensor | None = None,
        src_key_mask: torch.Tensor | None = None,
        cache: list[tuple[KVCache, KVCache]] | None = None,
    ) -> torch.Tensor:
        """Logits for the token after each target token, reading ``memory``.

        With a ``cache`` (:meth:`new_cache`), ``tgt`` holds only the tokens not
        yet decoded: their positions continue from the cached ones, each layer's
        self-attention adds their keys and values to the cache, and the memory's
        keys and values are projected once, at the first call.
        """
        offset = 0 if cache is None else len(cache[0][0])
        hidden = self.decoder(
            self._embed(tgt, self.tgt_embed, "tgt", offset=offset), memory,
            key_mask=tgt_key_mask, memory_key_mask=src_key_mask, cache=cache,
        )
        return self.output(hidden)

    def new_cache(self) -> list[tuple[KVCache, KVCache]]:
        """An empty key-value cache for :meth:`decode`, one pair per decoder layer."""
        return self.decoder.new_cache()

    def forward(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor,
        *,
        src_key_mask: torch.Tensor | None = None,
        tgt_key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode ``src``, then decode ``tgt`` against it (teacher forcing)."""
        memory = self.encode(src, src_key_mask=src_key_mask)
        return self.decode(tgt, memory, tgt_key_mask=tgt_key_mask, src_key_mask=src_key_mask)
