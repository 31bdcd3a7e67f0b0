"""tinyformer: the Transformer of *Attention, Derived*, one small module per idea.

Each name below is derived in a chapter of the book and checked there against
PyTorch's own version.
"""

from .attention import dot_product_attention
from .masks import causal_mask, combine_masks, mask_from_torch, mask_to_torch, padding_mask
from .multihead import MultiHeadAttention
from .runtime import per_profile, pick_device, profile

__version__ = "0.1.0"

__all__ = [
    "MultiHeadAttention",
    "causal_mask",
    "combine_masks",
    "dot_product_attention",
    "mask_from_torch",
    "mask_to_torch",
    "padding_mask",
    "per_profile",
    "pick_device",
    "profile",
]
