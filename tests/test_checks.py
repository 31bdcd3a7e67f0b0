"""Tests of tinyformer.checks: each planted bug is caught and named, correct code
passes, and failures reach pytest, nbgrader's rule and Gradescope as they should."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn

import tinyformer
from tinyformer.checks import (
    _MULTIHEAD_BUGS,
    CheckFailed,
    Report,
    _attention_bugs,
    _causal_bugs,
    _positional_bugs,
    _ReferenceMultiHead,
    check_attention,
    check_causal,
    check_multihead,
    check_positional_encoding,
    planted_bugs,
)

# --- correct code passes, on other seeds (other sizes) too ---------------------------


def textbook_attention(query, key, value, mask=None):
    """What a student writes: masked_fill with -inf, then zeros for empty rows."""
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.nan_to_num(scores.softmax(dim=-1)) @ value


def textbook_encoding(n_positions, d_model):
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]
    frequency = 10000 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    encoding = torch.zeros(n_positions, d_model, dtype=torch.float64)
    encoding[:, 0::2] = torch.sin(position * frequency)
    encoding[:, 1::2] = torch.cos(position * frequency)
    return encoding


def causal_self_attention(x):
    return tinyformer.dot_product_attention(x, x, x, is_causal=True)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_correct_implementations_pass_every_check(seed):
    for function in (textbook_attention, tinyformer.dot_product_attention):
        assert check_attention(function, seed=seed).passed
    for module in (tinyformer.MultiHeadAttention, _ReferenceMultiHead):
        assert check_multihead(module, seed=seed).passed
    assert check_causal(causal_self_attention, seed=seed).passed
    for encoding in (textbook_encoding, tinyformer.sinusoidal_encoding):
        assert check_positional_encoding(encoding, seed=seed).passed


# --- every planted bug fails, and is named --------------------------------------------


@pytest.mark.parametrize("bug", sorted(_attention_bugs()))
def test_check_attention_names_each_planted_bug(bug):
    function, description = _attention_bugs()[bug]
    with pytest.raises(CheckFailed) as failure:
        check_attention(function)
    assert description in str(failure.value)


def test_check_attention_says_which_scale_and_which_shape():
    with pytest.raises(CheckFailed, match="without the 1/sqrt"):
        check_attention(planted_bugs("attention")["no_scale"])
    with pytest.raises(CheckFailed, match=r"width d_v \(7\), not d_k \(6\)"):
        check_attention(lambda q, k, v, mask=None: textbook_attention(q, k, k, mask))


def test_check_attention_catches_nan_on_a_query_with_no_key():
    def naive(query, key, value, mask=None):  # no nan_to_num: an empty row is NaN
        scores = query @ key.transpose(-2, -1) / math.sqrt(query.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(dim=-1) @ value

    report = check_attention(naive, raise_on_fail=False)
    assert [case.name for case in report.failures()] == ["query with no key"]
    assert "NaN" in report.failures()[0].message


@pytest.mark.parametrize("bug", sorted(_MULTIHEAD_BUGS))
def test_check_multihead_names_each_planted_bug(bug):
    with pytest.raises(CheckFailed) as failure:
        check_multihead(planted_bugs("multihead")[bug](12, 3))
    assert _MULTIHEAD_BUGS[bug] in str(failure.value)


def test_a_check_leaves_the_students_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_multihead(tinyformer.MultiHeadAttention)
    assert torch.equal(torch.rand(3), expected)


def test_check_multihead_counts_parameters_and_finds_missing_projections():
    class NoOutput(nn.Module):
        def __init__(self, d_model, n_heads):
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, d_model)
                                                     for _ in range(3))

        def forward(self, query, key, value):
            return query

    report = check_multihead(NoOutput, raise_on_fail=False)
    assert "missing: out_proj" in report.failures()[0].message
    extra = _ReferenceMultiHead(12, 3)
    extra.scale = nn.Parameter(torch.ones(1, dtype=torch.float64))
    report = check_multihead(extra, raise_on_fail=False)
    assert "expected 624 parameters" in report.failures()[0].message


@pytest.mark.parametrize("bug", sorted(_causal_bugs(6)))
def test_check_causal_names_each_planted_bug(bug):
    function, description = _causal_bugs(6)[bug]
    with pytest.raises(CheckFailed) as failure:
        check_causal(function)
    assert description in str(failure.value)


def test_check_causal_accepts_a_module():
    class Causal(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = tinyformer.MultiHeadAttention(6, 2)

        def forward(self, x):
            return self.attention(x, x, x, is_causal=True)

    assert check_causal(Causal()).passed


@pytest.mark.parametrize("bug", sorted(_positional_bugs()))
def test_check_positional_encoding_names_each_planted_bug(bug):
    function, description = _positional_bugs()[bug]
    with pytest.raises(CheckFailed) as failure:
        check_positional_encoding(function)
    assert description in str(failure.value)


def test_concatenated_sines_and_cosines_pass_with_a_note():
    def concatenated(n, d):
        encoding = tinyformer.sinusoidal_encoding(n, d, dtype=torch.float64)
        return torch.cat([encoding[:, 0::2], encoding[:, 1::2]], dim=-1)

    report = check_positional_encoding(concatenated)
    assert report.passed and "another convention" in report.notes[0]


# --- what graders see -------------------------------------------------------------------


def test_a_failure_is_an_assertion_error_with_one_line_per_failed_case():
    with pytest.raises(AssertionError) as failure:
        check_attention(planted_bugs("attention")["mask_ignored"])
    assert isinstance(failure.value, CheckFailed)
    text = str(failure.value)
    assert text.splitlines()[0] == "check_attention: 3/5 cases passed"
    assert sum(line.startswith("  FAIL") for line in text.splitlines()) == 2
    assert failure.value._render_traceback_() == text.splitlines()


def test_a_missing_function_is_reported_not_crashed_on():
    with pytest.raises(CheckFailed, match="not found: did you run its cell"):
        check_attention(None)
    assert not check_multihead(None, raise_on_fail=False)


def test_the_students_exceptions_and_warnings_are_kept_in_the_report(capfd):
    def broken(query, key, value, mask=None):
        warnings.warn("about to fail", stacklevel=1)
        raise RuntimeError("shapes do not match")

    report = check_attention(broken, raise_on_fail=False)
    assert not report.passed
    assert "your code raised RuntimeError: shapes do not match" in report.cases[0].message
    assert any("about to fail" in note for note in report.notes)
    assert capfd.readouterr().err == ""  # nbgrader fails a cell that writes to stderr


def test_report_scores_prints_and_shows_a_table():
    report = check_attention(planted_bugs("attention")["finite_mask"], raise_on_fail=False)
    assert not report and report.score() == 4 and report.score(out_of=10) == 8
    assert repr(report) == repr(check_attention(planted_bugs("attention")["finite_mask"],
                                                raise_on_fail=False))  # stable
    assert "<table>" in report._repr_html_() and "✗" in report._repr_html_()
    with pytest.raises(CheckFailed):
        report.assert_passed()
    assert isinstance(check_attention(textbook_attention).assert_passed(), Report)


def test_gradescope_results_file_is_valid_and_merges(tmp_path):
    path = tmp_path / "results.json"
    check_attention(textbook_attention).to_gradescope(path)
    check_causal(planted_bugs("causal")["no_mask"], raise_on_fail=False).to_gradescope(
        path, visibility="after_due_date")
    results = json.loads(path.read_text())
    assert len(results["tests"]) == 5 + 3
    for test in results["tests"]:
        assert set(test) == {"name", "score", "max_score", "status", "output", "visibility"}
        assert 0 <= test["score"] <= test["max_score"]
        assert test["status"] == ("passed" if test["score"] == test["max_score"] else "failed")
    assert results["score"] == sum(test["score"] for test in results["tests"])
    with pytest.raises(ValueError, match="visibility"):
        check_attention(textbook_attention).to_gradescope(path, visibility="public")


def test_a_notebook_cell_fails_by_nbgrader_rule_only_when_the_check_fails():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "from tinyformer.checks import check_attention, planted_bugs\n"
        "import tinyformer",
        "check_attention(tinyformer.dot_product_attention)",
        "check_attention(planted_bugs('attention')['no_scale'])",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(notebook, kernel_name="python3", allow_errors=True,
                                     timeout=60)
    client.execute()

    def failed(cell):  # nbgrader: an error output, or anything on stderr
        return any(output.output_type == "error" or output.get("name") == "stderr"
                   for output in cell.outputs)

    assert [failed(cell) for cell in notebook.cells] == [False, False, True]
    error = next(o for o in notebook.cells[2].outputs if o.output_type == "error")
    assert error.ename == "CheckFailed"
    assert any("without the 1/sqrt(d_k) scale" in line for line in error.traceback)


def test_planted_bugs_rejects_an_unknown_check():
    with pytest.raises(ValueError, match="check must be one of"):
        planted_bugs("layernorm")
