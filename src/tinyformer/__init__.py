"""tinyformer: the Transformer of *Attention, Derived*, one small module per idea.

Each name below is derived in a chapter of the book and checked there against
PyTorch's own version.
"""

from .attention import dot_product_attention
from .decoding import beam_search, greedy_decode, sample
from .efficient import (
    chunked_attention,
    low_rank_attention,
    pooled_attention,
    random_feature_attention,
    random_features,
    recurrent_attention,
    sliding_window_attention,
)
from .layers import Decoder, DecoderLayer, Encoder, EncoderLayer, FeedForward
from .masks import causal_mask, combine_masks, mask_from_torch, mask_to_torch, padding_mask
from .model import Transformer
from .multihead import KVCache, MultiHeadAttention
from .positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
    rotary_embedding,
    sinusoidal_encoding,
)
from .runtime import per_profile, pick_device, profile

__version__ = "0.1.0"

__all__ = [
    "Decoder",
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "FeedForward",
    "KVCache",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "Transformer",
    "alibi_bias",
    "alibi_slopes",
    "beam_search",
    "causal_mask",
    "chunked_attention",
    "combine_masks",
    "dot_product_attention",
    "greedy_decode",
    "low_rank_attention",
    "mask_from_torch",
    "mask_to_torch",
    "padding_mask",
    "per_profile",
    "pick_device",
    "pooled_attention",
    "profile",
    "random_feature_attention",
    "random_features",
    "recurrent_attention",
    "rotary_embedding",
    "sample",
    "sinusoidal_encoding",
    "sliding_window_attention",
]
