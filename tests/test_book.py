"""Checks of the book's wiring: Colab twins in sync, links to the one repository URL,
every chapter in the table of contents and built the same way."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPOSITORY = CONFIG["repository"]["url"]


def twin_of(source: Path) -> Path:
    return source.with_suffix(".ipynb")


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_there_are_chapters():
    assert len(CHAPTERS) >= 2


def test_every_twin_has_a_source_and_every_source_a_twin():
    twins = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert [twin_of(source) for source in CHAPTERS] == twins


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda path: path.stem)
def test_twin_is_in_sync_with_its_source(source):
    expected = jupytext.read(source)
    twin = json.loads(twin_of(source).read_text())
    assert [(c.cell_type, c.source) for c in expected.cells] == [
        (c["cell_type"], "".join(c["source"])) for c in twin["cells"]
    ], f"run: make twins  (or jupytext --sync {source.relative_to(ROOT)})"
    assert [tags(c) for c in expected.cells] == [tags(c) for c in twin["cells"]]


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda path: path.stem)
def test_twin_is_stored_without_outputs(source):
    twin = json.loads(twin_of(source).read_text())
    for cell in twin["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_is_executable_myst_with_a_python_kernel(source):
    notebook = jupytext.read(source)
    assert notebook.metadata["jupytext"]["text_representation"]["format_name"] == "myst"
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    # Colab offers a GPU runtime for the twin; jupytext keeps the key only if filtered in.
    twin = json.loads(twin_of(source).read_text())
    assert notebook.metadata.get("accelerator") == twin["metadata"].get("accelerator") == "GPU"


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda path: path.stem)
def test_colab_badge_opens_this_chapters_twin(source):
    cells = jupytext.read(source).cells
    badges = [c for c in cells if "colab-badge.svg" in c.source]
    assert len(badges) == 1 and "remove-cell" in tags(badges[0])
    path = twin_of(source).relative_to(ROOT).as_posix()
    github = REPOSITORY.removeprefix("https://github.com/")
    target = f"https://colab.research.google.com/github/{github}/blob/main/{path}"
    assert f"]({target})" in badges[0].source


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda path: path.stem)
def test_install_cell_runs_only_on_colab_and_never_installs_torch(source):
    cells = [c for c in jupytext.read(source).cells if c.cell_type == "code"]
    install = cells[0]
    assert "remove-cell" in tags(install)
    assert 'if "google.colab" in sys.modules:' in install.source
    assert f'%pip install -q "tinyformer @ git+{REPOSITORY}"' in install.source
    assert not re.search(r"\btorch\b", install.source.split("if ")[1])
    for cell in cells:
        assert not re.search(r"pip install[^\n]*\btorch\b", cell.source)


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_ends_with_what_we_learned_and_exercises(source):
    headings = re.findall(r"^## (.+)$", source.read_text(), flags=re.MULTILINE)
    assert headings[-2:] == ["What we learned", "Exercises"]


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda path: path.stem)
def test_chapter_title_is_plain_words(source):
    title = re.search(r"^# (.+)$", source.read_text(), flags=re.MULTILINE).group(1)
    assert re.fullmatch(r"[A-Za-z0-9 ,'-]+", title), f"math or markup in the title: {title}"


def toc_files(entries) -> list[str]:
    files = []
    for entry in entries:
        if "file" in entry:
            files.append(entry["file"])
        files += toc_files(entry.get("chapters", []) + entry.get("sections", []))
    return files


def test_table_of_contents_lists_every_chapter_and_only_existing_pages():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"], *toc_files(toc["parts"])]
    for name in files:
        assert (ROOT / f"{name}.md").exists(), f"_toc.yml names a missing page: {name}"
    chapters = [name for name in files if name.startswith("notebooks/")]
    assert chapters == [f"notebooks/{source.stem}" for source in CHAPTERS]


def test_config_builds_offline_and_excludes_the_twins():
    assert CONFIG["execute"]["execute_notebooks"] in ("force", "cache")
    assert "**.ipynb" in CONFIG["exclude_patterns"]
    assert CONFIG["only_build_toc_files"] is True
    assert "sphinx.ext.intersphinx" not in CONFIG["sphinx"]["extra_extensions"]
    assert REPOSITORY.startswith("https://github.com/")
    assert f'Homepage = "{REPOSITORY}"' in (ROOT / "pyproject.toml").read_text()


def test_readme_gives_the_two_commands_and_links_to_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    assert REPOSITORY in readme
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^book:", makefile, re.MULTILINE)
    assert re.search(r"^test:", makefile, re.MULTILINE)


def exercises_section(source: Path) -> list:
    """The cells after the chapter's `## Exercises` heading, that heading's own
    cell cut to what follows the heading."""
    cells = jupytext.read(source).cells
    for index, cell in enumerate(cells):
        if cell.cell_type == "markdown" and re.search(r"^## Exercises$", cell.source, re.M):
            tail = nbformat.v4.new_markdown_cell(cell.source.split("## Exercises", 1)[1])
            return [tail, *cells[index + 1 :]]
    pytest.fail(f"{source.name} has no '## Exercises' heading")


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda path: path.stem)
def test_every_exercise_has_a_collapsed_executed_solution(source):
    """Exercise N gets a `:::{dropdown} Solution N` and a collapsed code cell that
    starts with `# Solution N` and checks itself, so a wrong solution fails the build."""
    cells = exercises_section(source)
    prose = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    numbers = [int(n) for n in re.findall(r"^(\d+)\.\s", prose, re.M)]
    assert numbers == list(range(1, len(numbers) + 1)) and numbers, "exercises 1, 2, ..."
    for n in numbers:
        assert re.search(rf"^:{{3,}}\{{dropdown\}} Solution {n}$", prose, re.M), (
            f"exercise {n} has no ':::{{dropdown}} Solution {n}'"
        )
        code = [c for c in cells if c.cell_type == "code" and c.source.startswith(
            f"# Solution {n}\n")]
        assert len(code) == 1, f"exercise {n} needs one code cell starting '# Solution {n}'"
        assert "hide-cell" in tags(code[0]), f"solution {n}'s code cell is not collapsed"
        assert re.search(r"\bassert\b|assert_close", code[0].source), (
            f"solution {n} checks nothing"
        )


def prose_without_numbers_we_may_write(text: str) -> str:
    """Markdown with what may hold literal digits removed: math, code, roles,
    directives' options, links and labels."""
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)  # display math
    text = re.sub(r"\$[^$\n]+\$", " ", text)  # inline math
    text = re.sub(r"```.*?```", " ", text, flags=re.S)  # code blocks
    text = re.sub(r"`[^`\n]*`", " ", text)  # inline code, and roles' targets
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
    text = re.sub(r"^:[a-z-]+:.*$", " ", text, flags=re.M)  # directive options
    return text


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda path: path.stem)
def test_prose_quotes_no_literal_decimal(source):
    """Every measured number in the prose is glued, so it cannot drift from the code."""
    for cell in jupytext.read(source).cells:
        if cell.cell_type != "markdown":
            continue
        decimals = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])|\b\d+(?:\.\d+)?\s?%",
                              prose_without_numbers_we_may_write(cell.source))
        assert not decimals, f"literal numbers {decimals} in prose: glue them"


def test_a_chapter_that_reads_another_chapters_files_runs_after_it():
    # The book executes chapters side by side (book/_ext/parallel_execution.py): a
    # chapter that reads chapter 10's checkpoint must be listed as running after it.
    after = CONFIG["sphinx"]["config"]["parallel_execution_after"]
    for name, needs in after.items():
        assert (ROOT / f"{name}.md").exists() and all(
            (ROOT / f"{need}.md").exists() for need in needs), name
    for chapter in CHAPTERS:
        if chapter.stem != "10_training" and "10_translator_" in chapter.read_text():
            assert "notebooks/10_training" in after.get(f"notebooks/{chapter.stem}", []), (
                f"{chapter.name} reads chapter 10's checkpoint: list it in _config.yml's "
                "parallel_execution_after")
