"""Pictures and numbers for the book: attention heatmaps, schematics drawn by code,
SVG figures, and ``glue`` to put a computed number into the prose as it should read."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
    vmin: float = 0.0,
    vmax: float | None = None,
    colorbar: bool = True,
) -> Any:
    """Draw attention weights as a heatmap: one row per query, one column per key.

    Args:
        weights: the weights of one attention map.
        query_labels: a label per row; defaults to the query's index.
        key_labels: a label per column; defaults to the key's index.
        ax: a matplotlib ``Axes`` to draw on; a new figure otherwise.
        title: the title above the map.
        annotate: write each weight in its cell (for small maps).
        vmin: the weight at the bottom of the colour scale.
        vmax: the weight at the top of the colour scale; defaults to the largest
            weight. Pass the same ``vmin``/``vmax`` to panels that are compared,
            so that one colour means one weight in all of them.
        colorbar: draw a colour bar beside the map.

    Returns:
        The matplotlib ``Axes``; its heatmap is ``ax.images[0]`` (for a colour bar
        shared by several panels).

    Shape:
        - weights: ``(n_q, n_k)``

    Example:
        >>> weights = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
        >>> ax = plot_attention(weights, ["le", "chat"], ["the", "cat"], annotate=True)
        >>> ax.get_xlabel(), ax.get_ylabel(), ax.images[0].get_array().shape
        ('key', 'query', (2, 2))
        >>> import matplotlib.pyplot as plt; plt.close(ax.figure)
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
    top = float(data.max()) if vmax is None else float(vmax)
    if not top > vmin:
        top = vmin + 1e-12  # an all-zero map (every query masked) still draws
    image = ax.imshow(data, cmap="viridis", vmin=vmin, vmax=top)
    ax.set_xticks(range(n_k), key_labels, rotation=90 if n_k > 8 else 0)
    ax.set_yticks(range(n_q), query_labels)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title)
    if annotate:
        for i in range(n_q):
            for j in range(n_k):
                color = "black" if data[i, j] > vmin + 0.6 * (top - vmin) else "white"
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", color=color)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label="weight")
    return ax


def schematic(
    boxes: Mapping[str, tuple[float, float, str]],
    arrows: Sequence[tuple[str, str] | tuple[str, str, str]],
    *,
    ax: Any = None,
    box_width: float = 1.6,
    box_height: float = 0.7,
    highlight: Sequence[str] = (),
    title: str | None = None,
) -> Any:
    """Draw a data-flow diagram: labelled boxes joined by arrows.

    Each chapter draws its schematic with this, in the build, so that the picture
    and the code cannot drift apart (no hand-pasted images).

    Args:
        boxes: ``name -> (x, y, text)``: the box's centre and its (multi-line) text,
            which may use matplotlib's mathtext (``"$Q$\\n(n_q, d_k)"``).
        arrows: ``(start, end)`` or ``(start, end, label)`` pairs of box names.
        ax: a matplotlib ``Axes`` to draw on; a new figure otherwise.
        box_width: the width of each box, in data units (1.3 in, or less when
            the diagram would be wider than a page).
        box_height: the height of each box, in data units.
        highlight: names of boxes drawn in the accent colour (the inputs, say).
        title: the title above the diagram.

    Returns:
        The matplotlib ``Axes``.

    Example:
        >>> ax = schematic({"q": (0, 0, "query"), "o": (2, 0, "output")}, [("q", "o")])
        >>> len(ax.patches)  # two boxes and one arrow
        3
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    for start, end, *_ in arrows:
        for name in (start, end):
            if name not in boxes:
                raise ValueError(f"arrows name a box {name!r} that is not in boxes")
    for name in highlight:
        if name not in boxes:
            raise ValueError(f"highlight names a box {name!r} that is not in boxes")
    xs = [x for x, _, _ in boxes.values()]
    ys = [y for _, y, _ in boxes.values()]
    if ax is None:
        width = max(xs, default=0) - min(xs, default=0) + box_width + 0.4
        height = max(ys, default=0) - min(ys, default=0) + box_height + 0.6
        # At most a page's width (7.5 in): a wider figure is shrunk on the page,
        # and its text with it.
        inches = min(1.3, 7.5 / width)
        _, ax = plt.subplots(figsize=(inches * width, inches * height), layout="constrained")
    for name, (x, y, text) in boxes.items():
        color = "#fde7c8" if name in highlight else "#e3ecf7"
        ax.add_patch(
            FancyBboxPatch(
                (x - box_width / 2, y - box_height / 2), box_width, box_height,
                boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=color,
                edgecolor="#33415c", linewidth=1.2,
            )
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=10)
    for start, end, *label in arrows:
        (x0, y0, _), (x1, y1, _) = boxes[start], boxes[end]
        # Leave each box at the side facing the other one.
        dx, dy = x1 - x0, y1 - y0
        shrink_x = box_width / 2 if abs(dx) * box_height >= abs(dy) * box_width else 0.0
        shrink_y = 0.0 if shrink_x else box_height / 2
        sign_x, sign_y = math.copysign(1.0, dx), math.copysign(1.0, dy)
        tail = (x0 + sign_x * shrink_x, y0 + sign_y * shrink_y)
        head = (x1 - sign_x * shrink_x, y1 - sign_y * shrink_y)
        ax.add_patch(
            FancyArrowPatch(tail, head, arrowstyle="-|>", mutation_scale=14,
                            color="#33415c", linewidth=1.2)
        )
        if label:
            ax.text((tail[0] + head[0]) / 2, (tail[1] + head[1]) / 2 + 0.12, label[0],
                    ha="center", va="bottom", fontsize=9, color="#33415c")
    margin_x, margin_y = box_width / 2 + 0.2, box_height / 2 + 0.2
    ax.set_xlim(min(xs, default=0) - margin_x, max(xs, default=0) + margin_x)
    ax.set_ylim(min(ys, default=0) - margin_y, max(ys, default=0) + margin_y)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax


def use_svg() -> None:
    """Make Jupyter show this notebook's matplotlib figures as SVG (crisp at any zoom).

    The book's chapters call it once, in their import cell; outside IPython it does
    nothing.

    Example:
        >>> use_svg() is None  # here, outside IPython: nothing to set
        True
    """
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    if get_ipython() is not None:
        set_matplotlib_formats("svg")


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def format_number(value: float, digits: int = 3) -> str:
    """Write ``value`` as a reader writes a number: ``0.0123``, ``4,096``, ``2.1 × 10⁻⁶``.

    Keeps ``digits`` significant digits (a whole number below ten million is kept
    whole), drops trailing zeros after the point, groups thousands, and switches
    to a power of ten below 0.001 and from ten million up (never ``2e-06``).

    Example:
        >>> format_number(0.012345), format_number(4096), format_number(2.06e-6, 2)
        ('0.0123', '4,096', '2.1 × 10⁻⁶')
        >>> format_number(63.999, 3), format_number(-0.5), format_number(1.5e9, 2)
        ('64', '-0.5', '1.5 × 10⁹')
    """
    digits = int(digits)
    if digits < 1:
        raise ValueError(f"digits must be at least 1, got {digits}")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e7:
        return f"{int(value):,}"
    rounded = float(f"{value:.{digits - 1}e}")  # to `digits` significant digits
    exponent = math.floor(math.log10(abs(rounded)))
    if exponent < -3 or exponent >= 7:
        mantissa = f"{rounded / 10**exponent:.{digits - 1}f}".rstrip("0").rstrip(".")
        power = f"10{str(exponent).translate(_SUPERSCRIPT)}"
        return power if mantissa == "1" else f"{mantissa} × {power}"
    decimals = max(0, digits - 1 - exponent)
    text = f"{rounded:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def glue(name: str, value: Any, *, digits: int | None = None, display: bool = False) -> Any:
    """Make ``value`` available to the book's prose as ``{glue:text}`name```.

    With ``digits``, the prose gets :func:`format_number`'s text (``2.1 × 10⁻⁶``,
    ``4,096``) and the role needs no format spec: ``{glue:text}`name```.
    Uses ``myst_nb.glue`` when it is installed (the book build); elsewhere
    (Colab, plain Jupyter) it shows the value only if ``display`` is true.
    Returns ``value`` (not the text) so a cell can glue and keep a number in one
    line (``gap = glue("gap", ..., digits=2)``); end a cell's last ``glue`` call
    with ``;`` so that Jupyter does not print the value.

    Example:
        >>> glue("variance", 63.7812, digits=3)
        63.7812
    """
    shown = value if digits is None else format_number(value, digits)
    try:
        from myst_nb import glue as myst_glue  # type: ignore[import-untyped]
    except ImportError:
        if display:
            from IPython.display import display as show

            show(shown)
    else:
        myst_glue(name, shown, display=display)
    return value


def _labels(name: str, labels: Sequence[str] | None, count: int) -> list[str]:
    if labels is None:
        return [str(i) for i in range(count)]
    labels = [str(label) for label in labels]
    if len(labels) != count:
        raise ValueError(f"{name} must have {count} labels, got {len(labels)}")
    return labels
