"""Checks of the built book, run by `make book` after the build (not by `make test`,
which runs before any build): what a reader sees on each chapter's page.

    pytest tests/book_html.py          # after jupyter-book build
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md"))
REPOSITORY = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def page(name: str) -> str:
    path = HTML / f"{name}.html"
    if not path.exists():
        pytest.fail(f"{path} was not built: run `make book` first")
    return path.read_text()


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_page_shows_figures_math_and_numbers(source):
    html = page(f"notebooks/{source.stem}")
    figures = re.findall(r'<img alt="[^"]*" src="\.\./_images/[0-9a-f]+\.(svg|png)"', html)
    assert figures, "no figure was rendered"
    assert set(figures) == {"svg"}, "a figure is a PNG: call tinyformer.viz.use_svg()"
    assert html.count('class="math notranslate nohighlight"') >= 5, "math missing"
    assert 'class="pasted-text"' in html, "no glued number reached the prose"
    assert not re.search(r'class="pasted-text">[^<]*\de[-+]\d', html), "a glued 2e-06"


def test_glued_numbers_are_not_bold():
    css = (HTML / "_static" / "book.css").read_text()
    assert re.search(r"span\.pasted-text\s*\{\s*font-weight:\s*normal", css)
    assert "_static/book.css" in page("book/preface")


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_page_has_a_colab_button_for_its_twin(source):
    html = page(f"notebooks/{source.stem}")
    github = REPOSITORY.removeprefix("https://github.com/")
    twin = f"colab.research.google.com/github/{github}/blob/main/notebooks/{source.stem}.ipynb"
    assert twin in html


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_page_hides_the_colab_cells_and_shows_no_errors(source):
    html = page(f"notebooks/{source.stem}")
    assert "pip install" not in html and "colab-badge.svg" not in html
    assert "Traceback" not in html
    assert not re.search(r'class="[^"]*\boutput stderr\b', html), "stderr reached the page"


def test_api_reference_documents_shapes_and_bibliography_lists_the_paper():
    assert page("book/api").count('<p class="rubric">Shape</p>') >= 3
    assert "Attention is all you need" in page("book/bibliography")
