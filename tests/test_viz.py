"""Tests of the book's picture helpers."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from tinyformer.viz import glue, plot_attention

matplotlib.use("Agg")


def test_plot_attention_labels_its_axes_and_cells():
    weights = torch.softmax(torch.randn(2, 3), dim=-1)
    ax = plot_attention(weights, ["a", "b"], ["x", "y", "z"], title="t", annotate=True)
    assert ax.get_xlabel() == "key" and ax.get_ylabel() == "query"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"]
    assert len(ax.texts) == 6 and ax.get_title() == "t"
    matplotlib.pyplot.close("all")


def test_plot_attention_rejects_bad_input():
    with pytest.raises(
        ValueError, match=r"weights must be 2-D \(n_q, n_k\), got shape \(1, 2, 3\)"
    ):
        plot_attention(torch.ones(1, 2, 3))
    with pytest.raises(ValueError, match="key_labels must have 3 labels, got 2"):
        plot_attention(torch.ones(2, 3), key_labels=["x", "y"])


def test_glue_returns_its_value():
    assert glue("answer", 42.0) == 42.0
