"""Pictures and numbers for the book: attention heatmaps, and ``glue`` to put a
computed number into the prose."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ._checks import check_tensor


def plot_attention(
    weights: torch.Tensor,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    *,
    ax: Any = None,
    title: str | None = None,
    annotate: bool = False,
) -> Any:
    """Draw attention weights as a heatmap: one row per query, one column per key.

    Args:
        weights: the weights of one attention map.
        query_labels: a label per row; defaults to the query's index.
        key_labels: a label per column; defaults to the key's index.
        ax: a matplotlib ``Axes`` to draw on; a new figure otherwise.
        title: the title above the map.
        annotate: write each weight in its cell (for small maps).

    Returns:
        The matplotlib ``Axes``.

    Shape:
        - weights: ``(n_q, n_k)``
    """
    import matplotlib.pyplot as plt  # imported here so the library loads without a display

    check_tensor("weights", weights)
    if weights.dim() != 2:
        raise ValueError(f"weights must be 2-D (n_q, n_k), got shape {tuple(weights.shape)}")
    n_q, n_k = weights.shape
    query_labels = _labels("query_labels", query_labels, n_q)
    key_labels = _labels("key_labels", key_labels, n_k)
    data = weights.detach().float().cpu().numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.5 * n_k, 0.8 + 0.45 * n_q), layout="constrained")
    image = ax.imshow(data, cmap="viridis", vmin=0.0, vmax=max(1e-12, float(data.max())))
    ax.set_xticks(range(n_k), key_labels, rotation=90 if n_k > 8 else 0)
    ax.set_yticks(range(n_q), query_labels)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title)
    if annotate:
        for i in range(n_q):
            for j in range(n_k):
                color = "black" if data[i, j] > 0.6 * data.max() else "white"
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", color=color)
    ax.figure.colorbar(image, ax=ax, label="weight")
    return ax


def glue(name: str, value: Any, *, display: bool = False) -> Any:
    """Make ``value`` available to the book's prose as ``{glue:text}`name```.

    Uses ``myst_nb.glue`` when it is installed (the book build); elsewhere
    (Colab, plain Jupyter) it shows the value only if ``display`` is true.
    Returns ``value`` so a cell can glue and keep a number in one line
    (``gap = glue("gap", ...)``); end a cell's last ``glue`` call with ``;`` so
    that Jupyter does not print the value.
    """
    try:
        from myst_nb import glue as myst_glue  # type: ignore[import-untyped]
    except ImportError:
        if display:
            from IPython.display import display as show

            show(value)
    else:
        myst_glue(name, value, display=display)
    return value


def _labels(name: str, labels: Sequence[str] | None, count: int) -> list[str]:
    if labels is None:
        return [str(i) for i in range(count)]
    labels = [str(label) for label in labels]
    if len(labels) != count:
        raise ValueError(f"{name} must have {count} labels, got {len(labels)}")
    return labels
