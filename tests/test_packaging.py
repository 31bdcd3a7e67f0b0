"""The package as coursework installs it: a wheel that leaves torch alone, and a
citation file equal to the README's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(folder)], check=True)
    (path,) = folder.glob("tinyformer-*.whl")
    return path


def test_the_wheel_holds_every_module_and_its_types(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"tinyformer/{p.name}" for p in (ROOT / "src" / "tinyformer").glob("*.py")}
    assert modules <= names
    assert "tinyformer/py.typed" in names


def test_installing_the_wheel_where_torch_is_installed_installs_only_tinyformer(wheel):
    report = wheel.parent / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                    "-q", "--report", str(report), str(wheel)], check=True)
    installed = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert installed == ["tinyformer"]  # torch and the rest are kept as they are


def test_citation_file_says_what_the_readme_says():
    readme = (ROOT / "README.md").read_text()
    bibtex = readme[readme.index("```bibtex"):]
    fields = dict(re.findall(r"(\w+)\s*=\s*\{+([^{}]+)\}+", bibtex))
    citation = (ROOT / "CITATION.cff").read_text()
    assert f'title: "{fields["title"]}"' in citation
    assert f'name: "{fields["author"]}"' in citation
    assert f"year: {fields['year']}" in citation
    assert f'url: "{fields["url"]}"' in citation
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert f'version: "{version.group(1)}"' in citation
