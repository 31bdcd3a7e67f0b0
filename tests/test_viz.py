"""Tests of the book's picture helpers."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from tinyformer.viz import format_number, glue, plot_attention, schematic

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


def test_plot_attention_shares_a_colour_scale_between_panels():
    weights = torch.tensor([[0.2, 0.3], [0.1, 0.4]])
    ax = plot_attention(weights, vmin=0.0, vmax=1.0, colorbar=False)
    assert ax.images[0].get_clim() == (0.0, 1.0)
    assert len(ax.figure.axes) == 1, "colorbar=False drew a colour bar"
    default = plot_attention(weights)
    assert default.images[0].get_clim() == (0.0, pytest.approx(0.4))
    matplotlib.pyplot.close("all")


def test_plot_attention_draws_an_all_zero_map():
    ax = plot_attention(torch.zeros(2, 3))
    low, high = ax.images[0].get_clim()
    assert high > low
    matplotlib.pyplot.close("all")


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (0.012345, 3, "0.0123"),
        (2.06e-6, 2, "2.1 × 10⁻⁶"),
        (1e-5, 3, "10⁻⁵"),
        (4096, 3, "4,096"),
        (4096.0, 2, "4,096"),
        (12345.678, 3, "12,300"),
        (63.999, 3, "64"),
        (0.9, 3, "0.9"),
        (-0.0625, 2, "-0.062"),
        (1.5e9, 2, "1.5 × 10⁹"),
        (0.0, 3, "0"),
    ],
)
def test_format_number_reads_like_a_number(value, digits, text):
    assert format_number(value, digits) == text


def test_format_number_rejects_no_digits():
    with pytest.raises(ValueError, match="digits must be at least 1, got 0"):
        format_number(1.0, 0)


def test_glue_with_digits_returns_the_value_not_the_text():
    assert glue("variance", 63.78, digits=2) == 63.78


def test_schematic_draws_a_box_per_name_and_an_arrow_per_pair():
    boxes = {"q": (0, 1, "$Q$"), "k": (0, 0, "$K$"), "s": (2, 0.5, "scores")}
    ax = schematic(boxes, [("q", "s"), ("k", "s", "$QK^T$")], highlight=["q"])
    assert len(ax.patches) == 5
    assert [t.get_text() for t in ax.texts] == ["$Q$", "$K$", "scores", "$QK^T$"]
    matplotlib.pyplot.close("all")


def test_schematic_names_a_missing_box():
    with pytest.raises(ValueError, match="arrows name a box 'v' that is not in boxes"):
        schematic({"q": (0, 0, "q")}, [("q", "v")])
