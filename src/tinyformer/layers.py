"""The Transformer's layers (chapter 8): feed-forward, encoder and decoder layers,
and their stacks.

An encoder layer is self-attention then a position-wise feed-forward network,
each wrapped in a residual connection and a LayerNorm. Post-norm (the paper's
order) normalises after each residual sum; pre-norm normalises each sub-layer's
input and leaves the residual path untouched::

    post-norm:  x = norm(x + dropout(sublayer(x)))
    pre-norm:   x = x + dropout(sublayer(norm(x)))

A decoder layer adds cross-attention over the encoder's output (the *memory*)
between its causal self-attention and its feed-forward network. Every module
here has ``from_torch`` to copy PyTorch's ``nn.TransformerEncoderLayer``,
``nn.TransformerDecoderLayer``, ``nn.TransformerEncoder`` or
``nn.TransformerDecoder``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_dropout, check_int, check_real, check_tensor
from .multihead import KVCache, MultiHeadAttention

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
}


class FeedForward(nn.Module):
    """The position-wise feed-forward network: ``activation(x W_1 + b_1) W_2 + b_2``.

    The same two-layer network acts on every token on its own; it is where a
    Transformer layer computes non-linear features of each token.

    Args:
        d_model: the width of the tokens, in and out.
        d_ff: the hidden width (2048 for the paper's 512-wide model).
        dropout: probability of dropping a hidden unit, in ``train()`` only.
        activation: ``"relu"`` (the paper) or ``"gelu"``.
        bias: give both linear layers a bias.
        device: where to make the parameters.
        dtype: the parameters' dtype.

    Shape:
        - x: ``(..., d_model)``
        - output: ``(..., d_model)``

    Example:
        >>> feed_forward = FeedForward(d_model=16, d_ff=64)
        >>> feed_forward(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        *,
        dropout: float = 0.0,
        activation: str = "relu",
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        d_model = check_int("d_model", d_model, minimum=1)
        d_ff = check_int("d_ff", d_ff, minimum=1)
        self.activation = _check_activation(activation)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias, **factory)
        self.dropout = nn.Dropout(check_dropout("dropout", dropout))
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the network to every token of ``x``."""
        _check_features("x", x, self.linear1.in_features, min_dim=1)
        hidden = ACTIVATIONS[self.activation](self.linear1(x))
        return self.linear2(self.dropout(hidden))


class EncoderLayer(nn.Module):
    """Self-attention and a feed-forward network, each with a residual connection
    and a LayerNorm; equal to :class:`torch.nn.TransformerEncoderLayer`.

    Args:
        d_model: the width of the tokens.
        n_heads: the number of attention heads; must divide ``d_model``.
        d_ff: the feed-forward network's hidden width.
        dropout: the dropout probability on the attention weights, the hidden
            units and each sub-layer's output, in ``train()`` only.
        norm_first: pre-norm (True) or the paper's post-norm (False).
        activation: ``"relu"`` or ``"gelu"``.
        layer_norm_eps: the LayerNorms' epsilon.
        bias: give the linear layers and the LayerNorms a bias.
        device: where to make the parameters.
        dtype: the parameters' dtype.

    Attributes:
        self_attn, feed_forward, norm1, norm2: the sub-layers.

    Shape:
        - x: ``(batch, n, d_model)``
        - key_mask: ``(batch, n)``, bool, **True = real token**
        - mask: broadcastable to ``(batch, n_heads, n, n)``, bool, True = may attend
        - output: ``(batch, n, d_model)``

    Example:
        >>> layer = EncoderLayer(d_model=16, n_heads=4, d_ff=64, dropout=0.0)
        >>> x = torch.randn(2, 5, 16)
        >>> layer(x, key_mask=torch.tensor([[True] * 5, [True] * 3 + [False] * 2])).shape
        torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        dropout: float = 0.1,
        norm_first: bool = False,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dropout = check_dropout("dropout", dropout)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.d_model, self.norm_first = d_model, _check_bool("norm_first", norm_first)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout, bias=bias, **factory)
        self.feed_forward = FeedForward(
            d_model, d_ff, dropout=dropout, activation=activation, bias=bias, **factory
        )
        eps = _check_eps(layer_norm_eps)
        self.norm1 = nn.LayerNorm(d_model, eps=eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, eps=eps, bias=bias, **factory)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        key_mask: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Encode ``x``; ``is_causal`` makes it a decoder-only model's layer.

        Args:
            x: the tokens.
            key_mask: True on the real tokens of each sequence.
            mask: which tokens each token may attend to.
            is_causal: each token sees only itself and the tokens before it.
        """
        _check_features("x", x, self.d_model)

        def attend(x: torch.Tensor) -> torch.Tensor:
            output = self.self_attn(x, mask=mask, key_mask=key_mask, is_causal=is_causal)
            return self.dropout1(output)

        def feed_forward(x: torch.Tensor) -> torch.Tensor:
            return self.dropout2(self.feed_forward(x))

        if self.norm_first:
            x = x + attend(self.norm1(x))
            return x + feed_forward(self.norm2(x))
        x = self.norm1(x + attend(x))
        return self.norm2(x + feed_forward(x))

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> EncoderLayer:
        """Copy a :class:`torch.nn.TransformerEncoderLayer` (``batch_first`` either
        way; ours is batch-first) into a layer that computes the same outputs.

        Padded positions are computed like any token, by PyTorch's layer and by
        ours; only :class:`torch.nn.TransformerEncoder`'s nested-tensor path
        (``eval()``, no grad) returns zeros there. Compare real tokens.

        Example:
            >>> torch_layer = nn.TransformerEncoderLayer(16, 4, 64, batch_first=True)
            >>> ours = EncoderLayer.from_torch(torch_layer).eval()
            >>> x = torch.randn(2, 5, 16)
            >>> torch.allclose(ours(x), torch_layer.eval()(x), atol=1e-5)
            True
        """
        if not isinstance(layer, nn.TransformerEncoderLayer):
            raise TypeError(
                f"layer must be a torch.nn.TransformerEncoderLayer, got {type(layer).__name__}"
            )
        copy_ = cls(
            layer.self_attn.embed_dim, layer.self_attn.num_heads, layer.linear1.out_features,
            **_torch_options(layer),
        )
        _copy_sublayers(copy_, layer, norms=2)
        return copy_.train(layer.training)


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention over the encoder's output and a
    feed-forward network, each with a residual connection and a LayerNorm; equal
    to :class:`torch.nn.TransformerDecoderLayer` with a causal target mask.

    The self-attention is causal through ``is_causal``: no ``(n, n)`` mask is
    built. Arguments as :class:`EncoderLayer`'s.

    Attributes:
        self_attn, cross_attn, feed_forward, norm1, norm2, norm3: the sub-layers.

    Shape:
        - y: ``(batch, n_tgt, d_model)``, the target tokens
        - memory: ``(batch, n_src, d_model)``, the encoder's output
        - key_mask: ``(batch, n_tgt)``; memory_key_mask: ``(batch, n_src)``; bool,
          **True = real token**
        - output: ``(batch, n_tgt, d_model)``

    Example:
        >>> layer = DecoderLayer(d_model=16, n_heads=4, d_ff=64, dropout=0.0)
        >>> layer(torch.randn(2, 5, 16), torch.randn(2, 7, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        dropout: float = 0.1,
        norm_first: bool = False,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dropout = check_dropout("dropout", dropout)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.d_model, self.norm_first = d_model, _check_bool("norm_first", norm_first)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout, bias=bias, **factory)
        self.cross_attn = MultiHeadAttention(
            d_model, n_heads, dropout=dropout, bias=bias, **factory
        )
        self.feed_forward = FeedForward(
            d_model, d_ff, dropout=dropout, activation=activation, bias=bias, **factory
        )
        eps = _check_eps(layer_norm_eps)
        self.norm1, self.norm2, self.norm3 = (
            nn.LayerNorm(d_model, eps=eps, bias=bias, **factory) for _ in range(3)
        )
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))

    def forward(
        self,
        y: torch.Tensor,
        memory: torch.Tensor,
        *,
        key_mask: torch.Tensor | None = None,
        memory_key_mask: torch.Tensor | None = None,
        cache: tuple[KVCache, KVCache] | None = None,
    ) -> torch.Tensor:
        """Decode the target ``y`` while reading ``memory``.

        Args:
            y: the target tokens; each sees only itself and the tokens before it.
            memory: the encoder's output, seen whole by every target token.
            key_mask: True on the real target tokens (all of them, cached ones
                included, when decoding with a cache).
            memory_key_mask: True on the real source tokens.
            cache: the self-attention's growing cache and the cross-attention's
                static one (:meth:`new_cache`): ``y`` is then only the new tokens,
                the last positions of the target so far.
        """
        _check_features("y", y, self.d_model)
        _check_features("memory", memory, self.d_model)
        if memory.shape[0] != y.shape[0]:
            raise ValueError(
                f"memory must have y's batch size {y.shape[0]}, got shape {tuple(memory.shape)}"
            )

        own, memory_cache = (None, None) if cache is None else cache

        def attend(y: torch.Tensor) -> torch.Tensor:
            output = self.self_attn(y, key_mask=key_mask, is_causal=True, cache=own)
            return self.dropout1(output)

        def read(y: torch.Tensor) -> torch.Tensor:
            output = self.cross_attn(y, memory, key_mask=memory_key_mask, cache=memory_cache)
            return self.dropout2(output)

        def feed_forward(y: torch.Tensor) -> torch.Tensor:
            return self.dropout3(self.feed_forward(y))

        if self.norm_first:
            y = y + attend(self.norm1(y))
            y = y + read(self.norm2(y))
            return y + feed_forward(self.norm3(y))
        y = self.norm1(y + attend(y))
        y = self.norm2(y + read(y))
        return self.norm3(y + feed_forward(y))

    @staticmethod
    def new_cache() -> tuple[KVCache, KVCache]:
        """An empty cache for decoding one token at a time."""
        return KVCache(), KVCache(static=True)

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer) -> DecoderLayer:
        """Copy a :class:`torch.nn.TransformerDecoderLayer` (``batch_first`` either
        way) into a layer that computes what it computes with a causal
        ``tgt_mask`` (``tgt_is_causal=True``).

        Example:
            >>> torch_layer = nn.TransformerDecoderLayer(16, 4, 64, batch_first=True)
            >>> ours = DecoderLayer.from_torch(torch_layer).eval()
            >>> y, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
            >>> causal = nn.Transformer.generate_square_subsequent_mask(5)
            >>> expected = torch_layer.eval()(y, memory, tgt_mask=causal, tgt_is_causal=True)
            >>> torch.allclose(ours(y, memory), expected, atol=1e-5)
            True
        """
        if not isinstance(layer, nn.TransformerDecoderLayer):
            raise TypeError(
                f"layer must be a torch.nn.TransformerDecoderLayer, got {type(layer).__name__}"
            )
        copy_ = cls(
            layer.self_attn.embed_dim, layer.self_attn.num_heads, layer.linear1.out_features,
            **_torch_options(layer),
        )
        copy_.cross_attn = MultiHeadAttention._copy_weights(layer.multihead_attn)
        _copy_sublayers(copy_, layer, norms=3)
        return copy_.train(layer.training)


class Encoder(nn.Module):
    """A stack of ``n_layers`` encoder layers and an optional final LayerNorm.

    Args:
        d_model, n_heads, d_ff: as :class:`EncoderLayer`'s.
        n_layers: the number of layers (6 in the paper).
        final_norm: end with a LayerNorm. A pre-norm stack needs one: its
            residual path is never normalised otherwise. ``nn.Transformer`` puts
            one after both its stacks, post-norm or not.
        **options: ``dropout``, ``norm_first``, ``activation``, ``layer_norm_eps``,
            ``bias``, ``device``, ``dtype``, as :class:`EncoderLayer`'s.

    Attributes:
        layers: an ``nn.ModuleList`` of :class:`EncoderLayer`.
        norm: the final LayerNorm, or None.

    Shape:
        As :class:`EncoderLayer`'s.

    Example:
        >>> encoder = Encoder(16, 4, 64, n_layers=2, dropout=0.0)
        >>> encoder(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        n_layers: int,
        *,
        final_norm: bool = False,
        **options: object,
    ) -> None:
        super().__init__()
        self.layers, self.norm = _stack(EncoderLayer, d_model, n_heads, d_ff, n_layers,
                                        final_norm, options)

    def forward(
        self,
        x: torch.Tensor,
        *,
        key_mask: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Run ``x`` through every layer in turn, then the final norm."""
        for layer in self.layers:
            x = layer(x, key_mask=key_mask, mask=mask, is_causal=is_causal)
        return x if self.norm is None else self.norm(x)

    @classmethod
    def from_torch(cls, encoder: nn.TransformerEncoder) -> Encoder:
        """Copy a :class:`torch.nn.TransformerEncoder`.

        With ``enable_nested_tensor`` PyTorch's stack, like its layers' fast path,
        returns zeros at padded positions in ``eval()``: compare real tokens.
        """
        if not isinstance(encoder, nn.TransformerEncoder):
            raise TypeError(
                f"encoder must be a torch.nn.TransformerEncoder, got {type(encoder).__name__}"
            )
        return _copy_stack(cls, encoder, EncoderLayer)


class Decoder(nn.Module):
    """A stack of ``n_layers`` decoder layers and an optional final LayerNorm.

    Arguments and attributes as :class:`Encoder`'s, with :class:`DecoderLayer`.

    Shape:
        As :class:`DecoderLayer`'s.

    Example:
        >>> decoder = Decoder(16, 4, 64, n_layers=2, dropout=0.0)
        >>> decoder(torch.randn(2, 5, 16), torch.randn(2, 7, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        n_layers: int,
        *,
        final_norm: bool = False,
        **options: object,
    ) -> None:
        super().__init__()
        self.layers, self.norm = _stack(DecoderLayer, d_model, n_heads, d_ff, n_layers,
                                        final_norm, options)

    def forward(
        self,
        y: torch.Tensor,
        memory: torch.Tensor,
        *,
        key_mask: torch.Tensor | None = None,
        memory_key_mask: torch.Tensor | None = None,
        cache: list[tuple[KVCache, KVCache]] | None = None,
    ) -> torch.Tensor:
        """Run ``y`` through every layer in turn, each reading ``memory``; with a
        ``cache`` (:meth:`new_cache`), ``y`` is only the new target tokens."""
        caches = [None] * len(self.layers) if cache is None else cache
        for layer, layer_cache in zip(self.layers, caches, strict=True):
            y = layer(y, memory, key_mask=key_mask, memory_key_mask=memory_key_mask,
                      cache=layer_cache)
        return y if self.norm is None else self.norm(y)

    def new_cache(self) -> list[tuple[KVCache, KVCache]]:
        """An empty cache per layer, for decoding one token at a time."""
        return [DecoderLayer.new_cache() for _ in self.layers]

    @classmethod
    def from_torch(cls, decoder: nn.TransformerDecoder) -> Decoder:
        """Copy a :class:`torch.nn.TransformerDecoder`; it computes what PyTorch's
        computes with a causal ``tgt_mask``."""
        if not isinstance(decoder, nn.TransformerDecoder):
            raise TypeError(
                f"decoder must be a torch.nn.TransformerDecoder, got {type(decoder).__name__}"
            )
        return _copy_stack(cls, decoder, DecoderLayer)


def _copy_stack(cls: Any, stack: Any, layer_cls: Any) -> Any:
    """A stack of ``cls`` whose layers copy ``stack``'s and whose norm is its norm."""
    copy_ = cls.__new__(cls)
    nn.Module.__init__(copy_)
    copy_.layers = nn.ModuleList(layer_cls.from_torch(layer) for layer in stack.layers)
    copy_.norm = None if stack.norm is None else copy.deepcopy(stack.norm)
    return copy_.train(stack.training)


def _stack(
    layer_cls: Any, d_model: int, n_heads: int, d_ff: int, n_layers: int,
    final_norm: bool, options: dict[str, Any],
) -> tuple[nn.ModuleList, nn.LayerNorm | None]:
    """``n_layers`` fresh layers of ``layer_cls`` and the stack's final norm."""
    n_layers = check_int("n_layers", n_layers, minimum=1)
    layers = nn.ModuleList(layer_cls(d_model, n_heads, d_ff, **options) for _ in range(n_layers))
    return layers, _final_norm(layers[0].norm1, final_norm)


def _final_norm(norm: Any, final_norm: bool) -> nn.LayerNorm | None:
    """A fresh LayerNorm like ``norm``, or None."""
    if not _check_bool("final_norm", final_norm):
        return None
    return nn.LayerNorm(
        norm.normalized_shape, eps=norm.eps, bias=norm.bias is not None,
        device=norm.weight.device, dtype=norm.weight.dtype,
    )


def _torch_options(layer: Any) -> dict[str, Any]:
    """Our constructor's keyword arguments for a PyTorch layer."""
    weight = layer.linear1.weight
    return {
        "dropout": layer.dropout.p,
        "norm_first": layer.norm_first,
        "activation": _torch_activation(layer),
        "layer_norm_eps": layer.norm1.eps,
        "bias": layer.linear1.bias is not None,
        "device": weight.device,
        "dtype": weight.dtype,
    }


def _torch_activation(layer: Any) -> str:
    """``"relu"`` or ``"gelu"``, whichever form PyTorch stored it in."""
    activation = layer.activation
    if activation is F.relu or isinstance(activation, nn.ReLU):
        return "relu"
    if activation is F.gelu or (
        isinstance(activation, nn.GELU) and activation.approximate == "none"
    ):
        return "gelu"
    raise ValueError(
        f"layer.activation must be relu or gelu (exact), got {activation!r}"
    )


def _copy_sublayers(ours: Any, layer: Any, *, norms: int) -> None:
    """Copy the self-attention, the feed-forward network and the LayerNorms."""
    ours.self_attn = MultiHeadAttention._copy_weights(layer.self_attn)
    with torch.no_grad():
        for name in ("linear1", "linear2"):
            getattr(ours.feed_forward, name).load_state_dict(getattr(layer, name).state_dict())
        for i in range(1, norms + 1):
            getattr(ours, f"norm{i}").load_state_dict(getattr(layer, f"norm{i}").state_dict())


def _check_features(name: str, x: object, d_model: int, *, min_dim: int = 3) -> None:
    x = check_tensor(name, x)
    if min_dim == 3 and x.dim() != 3:
        raise ValueError(
            f"{name} must be 3-D (batch, length, d_model), got shape {tuple(x.shape)}; "
            f"add a batch dimension with {name}[None]"
        )
    if x.dim() < min_dim or x.shape[-1] != d_model:
        raise ValueError(
            f"{name} must have d_model={d_model} features in its last dimension, "
            f"got shape {tuple(x.shape)}"
        )


def _check_activation(activation: object) -> str:
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return activation


def _check_eps(eps: object) -> float:
    eps = check_real("layer_norm_eps", eps)
    if eps <= 0:
        raise ValueError(f"layer_norm_eps must be positive, got {eps}")
    return eps


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value
