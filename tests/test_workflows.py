"""GitHub's workflows run the README's two commands and publish the book."""

from __future__ import annotations

from pathlib import Path

import yaml

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"


def steps(name: str) -> list[dict]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_the_test_workflow_runs_make_test():
    assert any(step.get("run") == "make test" for step in steps("test.yml"))


def test_the_book_workflow_builds_the_book_and_publishes_it_to_pages():
    book = steps("book.yml")
    assert any(step.get("run") == "make book" for step in book)
    upload = [s for s in book if s.get("uses", "").startswith("actions/upload-pages-artifact")]
    assert upload and upload[0]["with"]["path"] == "_build/html"
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in book)
