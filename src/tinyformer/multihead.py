"""Multi-head attention (chapters 4 to 6): ``n_heads`` attentions side by side.

Each head attends on its own ``d_model / n_heads`` slice of learned projections of
the queries, keys and values; their outputs are put side by side again and mixed
by an output projection::

    head_h = Attention(query W_Q^h, key W_K^h, value W_V^h)
    output = concat(head_1, ..., head_H) W_O

The same module does self-attention (``key`` and ``value`` default to ``query``)
and cross-attention (``key`` and ``value`` from another sequence).
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_dropout, check_int, check_tensor
from .attention import _check_bias, _check_mask, dot_product_attention
from .masks import combine_masks


class KVCache:
    """One attention layer's projected keys and values, kept between steps.

    Args:
        static: the keys and values are computed once and reused (the memory of
            cross-attention); otherwise each step appends its own (self-attention).

    Shape:
        - key, value: ``(batch, n_heads, n_cached, d_model // n_heads)``, or None

    Example:
        >>> attention = MultiHeadAttention(d_model=8, n_heads=2)
        >>> cache = KVCache()
        >>> _ = attention(torch.randn(1, 3, 8), cache=cache)  # the prompt: 3 tokens
        >>> _ = attention(torch.randn(1, 1, 8), cache=cache)  # then one new token
        >>> cache, cache.key.shape
        (KVCache(static=False, cached=4), torch.Size([1, 2, 4, 4]))
    """

    def __init__(self, *, static: bool = False) -> None:
        self.static = static
        self.key: torch.Tensor | None = None
        self.value: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.key is None else self.key.shape[2]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the rows ``index`` of the batch (beam search moves prefixes)."""
        if self.key is not None and self.value is not None:
            self.key, self.value = self.key[index], self.value[index]

    def cached(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The cached keys and values, or None before the first step."""
        if self.key is None or self.value is None:
            return None
        return self.key, self.value

    def __repr__(self) -> str:
        return f"KVCache(static={self.static}, cached={len(self)})"


class MultiHeadAttention(nn.Module):
    """Multi-head attention, equal to :class:`torch.nn.MultiheadAttention`.

    Args:
        d_model: the width of the queries and of the output.
        n_heads: the number of heads; must divide ``d_model``.
        dropout: probability of dropping an attention weight, in ``train()`` only.
        bias: give the four projections a bias.
        kdim: the features of the ``key`` input, before ``k_proj`` (not the
            projected width of a head's keys); defaults to ``d_model``.
        vdim: the features of the ``value`` input, before ``v_proj``; defaults
            to ``d_model``.
        device: where to make the parameters.
        dtype: the parameters' dtype.

    Attributes:
        q_proj, k_proj, v_proj, out_proj: the projections, ``nn.Linear`` modules
            (``W_Q``, ``W_K``, ``W_V``, ``W_O``, stored transposed as ``nn.Linear``
            stores them).

    Shape:
        - query: ``(batch, n_q, d_model)``
        - key: ``(batch, n_k, kdim)``; value: ``(batch, n_k, vdim)``
        - mask: broadcastable to ``(batch, n_heads, n_q, n_k)``, bool,
          **True = may attend**
        - key_mask: ``(batch, n_k)``, bool, **True = real token**
        - bias: float, broadcastable to ``(batch, n_heads, n_q, n_k)``
        - output: ``(batch, n_q, d_model)``
        - weights: ``(batch, n_heads, n_q, n_k)``, one map per head

    Example:
        >>> attention = MultiHeadAttention(d_model=16, n_heads=4)
        >>> x = torch.randn(2, 5, 16)  # (batch, n, d_model)
        >>> attention(x).shape
        torch.Size([2, 5, 16])
        >>> memory = torch.randn(2, 7, 16)  # another sequence, of another length
        >>> output, weights = attention(x, memory, need_weights=True)
        >>> output.shape, weights.shape
        (torch.Size([2, 5, 16]), torch.Size([2, 4, 5, 7]))
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        d_model = check_int("d_model", d_model, minimum=1)
        n_heads = check_int("n_heads", n_heads, minimum=1)
        if d_model % n_heads:
            raise ValueError(
                f"n_heads must divide d_model, got d_model={d_model} and n_heads={n_heads}"
            )
        dropout = check_dropout("dropout", dropout)
        kdim = d_model if kdim is None else check_int("kdim", kdim, minimum=1)
        vdim = d_model if vdim is None else check_int("vdim", vdim, minimum=1)
        self.d_model, self.n_heads, self.dropout = d_model, n_heads, dropout
        self.kdim, self.vdim = kdim, vdim
        factory = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(d_model, d_model, bias=bias, **factory)
        self.k_proj = nn.Linear(kdim, d_model, bias=bias, **factory)
        self.v_proj = nn.Linear(vdim, d_model, bias=bias, **factory)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias, **factory)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        bias: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``query`` to ``key``/``value`` (to itself when they are omitted).

        Args:
            query: the sequence that asks.
            key: the sequence that is looked up; defaults to ``query``.
            value: what is returned; defaults to ``key``.
            mask: bool, **True = may attend**, broadcastable to
                ``(batch, n_heads, n_q, n_k)``.
            key_mask: bool ``(batch, n_k)``, **True = real token**: the padded keys
                are masked for every query.
            is_causal: each query sees only keys up to its own position (aligned
                bottom-right, see :func:`~tinyformer.dot_product_attention`).
            need_weights: also return each head's attention weights.
            bias: float, added to each head's scaled scores, broadcastable to
                ``(batch, n_heads, n_q, n_k)``: e.g. ALiBi's
                ``tinyformer.alibi_bias(n_heads, n)``.
            cache: keep projected keys and values between decoding steps. A
                growing cache (self-attention) appends the keys and values of
                ``key``/``value`` to the past ones, which the queries then see
                too (with ``is_causal``, the queries are the last positions);
                a static cache (cross-attention) projects the memory once and
                reuses it. ``mask`` and ``key_mask`` then cover every key.

        Returns:
            The output ``(batch, n_q, d_model)``, or ``(output, weights)``.
        """
        key = query if key is None else key
        value = key if value is None else value
        batch, n_q, n_k = self._check_inputs(query, key, value)
        heads, d_head = self.n_heads, self.d_model // self.n_heads
        # Split: (batch, n, d_model) -> (batch, n, heads, d_head)
        #     -> (batch, heads, n, d_head).
        # The transpose is what makes each head see its own slice of every token.
        q = self.q_proj(query).view(batch, n_q, heads, d_head).transpose(1, 2)
        past = None if cache is None else cache.cached()
        if cache is not None and cache.static and past is not None:
            k, v = past  # the memory's, projected at the first step
        else:
            k = self.k_proj(key).view(batch, n_k, heads, d_head).transpose(1, 2)
            v = self.v_proj(value).view(batch, n_k, heads, d_head).transpose(1, 2)
            if cache is not None:
                if past is not None:  # the new tokens' keys join the past ones
                    k = torch.cat([past[0], k], dim=2)
                    v = torch.cat([past[1], v], dim=2)
                cache.key, cache.value = k, v
        n_k = k.shape[2]
        if mask is not None:  # checked here, so that errors name `mask`
            _check_mask(mask, query, (batch, self.n_heads, n_q, n_k))
        if bias is not None:
            _check_bias(bias, query, (batch, self.n_heads, n_q, n_k))
        if key_mask is not None:
            key_mask = check_tensor("key_mask", key_mask)
            if key_mask.dtype != torch.bool:
                raise TypeError(
                    "key_mask must be a bool tensor (True = real token), got dtype "
                    f"{key_mask.dtype}; from PyTorch's key_padding_mask (True = ignore) "
                    "use tinyformer.mask_from_torch"
                )
            if key_mask.dim() != 2 or key_mask.shape[0] != batch or key_mask.shape[1] != n_k:
                raise ValueError(
                    f"key_mask must have shape (batch, n_k) = ({batch}, {n_k}), "
                    f"got {tuple(key_mask.shape)}"
                )
            key_mask = key_mask[:, None, None, :]  # (batch, 1, 1, n_k)
        result = dot_product_attention(
            q, k, v, combine_masks(mask, key_mask),
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal, return_weights=need_weights, bias=bias,
        )
        output, weights = result if isinstance(result, tuple) else (result, None)
        # Merge: (batch, heads, n_q, d_head) -> (batch, n_q, heads, d_head)
        #     -> (batch, n_q, d_model): transpose first, then flatten the heads.
        output = self.out_proj(output.transpose(1, 2).reshape(batch, n_q, self.d_model))
        return output if weights is None else (output, weights)

    def _check_inputs(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[int, int, int]:
        expected = {"query": self.d_model, "key": self.kdim, "value": self.vdim}
        for name, tensor in (("query", query), ("key", key), ("value", value)):
            check_tensor(name, tensor)
            if tensor.dim() != 3:
                raise ValueError(
                    f"{name} must be 3-D (batch, length, features), got shape "
                    f"{tuple(tensor.shape)}; add a batch dimension with {name}[None]"
                )
            if tensor.shape[-1] != expected[name]:
                raise ValueError(
                    f"{name} must have {expected[name]} features (the module's "
                    f"{'d_model' if name == 'query' else name[0] + 'dim'}), "
                    f"got shape {tuple(tensor.shape)}"
                )
        if key.shape[0] != query.shape[0] or value.shape[0] != query.shape[0]:
            raise ValueError(
                "query, key and value must have the same batch size, got "
                f"{query.shape[0]}, {key.shape[0]} and {value.shape[0]}"
            )
        if value.shape[1] != key.shape[1]:
            raise ValueError(
                f"value must have one token per key (n_k={key.shape[1]}), "
                f"got value of shape {tuple(value.shape)}"
            )
        return query.shape[0], query.shape[1], key.shape[1]

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy a :class:`torch.nn.MultiheadAttention` into a new module that
        computes the same outputs and per-head weights.

        The copy takes its parameters' device and dtype. PyTorch's module must be
        ``batch_first=True`` (ours is always batch-first) and have no
        ``add_bias_kv`` or ``add_zero_attn``.

        Example:
            >>> torch_attention = nn.MultiheadAttention(16, 4, batch_first=True)
            >>> ours = MultiHeadAttention.from_torch(torch_attention)
            >>> x = torch.randn(2, 5, 16)
            >>> torch.allclose(ours(x), torch_attention(x, x, x)[0], atol=1e-6)
            True
        """
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(
                f"module must be a torch.nn.MultiheadAttention, got {type(module).__name__}"
            )
        if not module.batch_first:
            raise ValueError("module must have batch_first=True, like this library")
        return cls._copy_weights(module)

    @classmethod
    def _copy_weights(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """The copy of ``from_torch`` whatever ``module.batch_first`` is: a
        Transformer layer of PyTorch's may hold a sequence-first attention."""
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("module must not use add_bias_kv or add_zero_attn")
        weight = module.out_proj.weight
        copy = cls(
            module.embed_dim, module.num_heads, dropout=module.dropout,
            bias=module.in_proj_bias is not None, kdim=module.kdim, vdim=module.vdim,
            device=weight.device, dtype=weight.dtype,
        )
        if module._qkv_same_embed_dim:
            w_q, w_k, w_v = module.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = (
                module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
            )
        with torch.no_grad():
            for ours, w in ((copy.q_proj, w_q), (copy.k_proj, w_k), (copy.v_proj, w_v)):
                ours.weight.copy_(w)
            copy.out_proj.weight.copy_(weight)
            if module.in_proj_bias is not None:
                b_q, b_k, b_v = module.in_proj_bias.chunk(3)
                copy.q_proj.bias.copy_(b_q)
                copy.k_proj.bias.copy_(b_k)
                copy.v_proj.bias.copy_(b_v)
                copy.out_proj.bias.copy_(module.out_proj.bias)
        return copy.train(module.training)
