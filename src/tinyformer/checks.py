"""Checks that grade a student's implementation, in any grader.

Each check runs the student's code on small, deterministic cases and compares it
with the library's reference. Graders see failures in different ways (nbgrader
marks a cell wrong only when it raises or writes to stderr; otter and pytest when
it raises; Gradescope shows the exception's message), so a check **raises**
:class:`CheckFailed`, an ``AssertionError``, when any case fails, with one line per
failed case: what was given, what was expected, what came back, and the likely
cause. When the output matches a known bug (a *fingerprint*: the reference with
that bug planted), the line names it. On success a check returns a
:class:`Report`; with ``raise_on_fail=False`` it always does.

Nothing is written to stderr: warnings raised by the student's code are kept in the
report. The cases use float64, distinct sizes for every axis (so that a swapped
axis cannot pass) and a fixed generator; ``seed=`` draws other cases, for hidden
tests.

Example:
    >>> import torch
    >>> from tinyformer.checks import check_attention
    >>> def attention(query, key, value, mask=None):
    ...     scores = query @ key.transpose(-2, -1) / query.shape[-1] ** 0.5
    ...     if mask is not None:
    ...         scores = scores.masked_fill(~mask, float("-inf"))
    ...     return torch.nan_to_num(scores.softmax(dim=-1)) @ value
    >>> check_attention(attention).passed
    True
"""

from __future__ import annotations

import functools
import html
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .attention import dot_product_attention
from .multihead import MultiHeadAttention
from .positional import sinusoidal_encoding

__all__ = [
    "Case",
    "CheckFailed",
    "Report",
    "check_attention",
    "check_causal",
    "check_multihead",
    "check_positional_encoding",
    "planted_bugs",
]

F64 = torch.float64


# --- the report ------------------------------------------------------------------


@dataclass
class Case:
    """One graded case: its name, whether it passed, what went wrong, its points.

    Example:
        >>> Case("output shape", passed=False, message="expected (2, 7), got (2, 6)")
        Case(name='output shape', passed=False, message='expected (2, 7), got (2, 6)', points=1.0)
    """

    name: str
    passed: bool
    message: str = ""
    points: float = 1.0


@dataclass
class Report:
    """The result of a check: its cases, and notes that are not failures.

    ``bool(report)`` is ``report.passed``. ``repr`` is plain and stable (otter
    compares printed output); in a notebook the report shows as a table.

    Example:
        >>> report = Report("check_demo", [Case("shape", True),
        ...                                Case("values", False, "off by 0.5", points=3.0)])
        >>> report
        check_demo: 1/2 cases passed
          ok   shape
          FAIL values: off by 0.5
        >>> bool(report), report.score(), report.score(out_of=100)
        (False, 1.0, 25.0)
    """

    check: str
    cases: list[Case]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(case.passed for case in self.cases)

    def __bool__(self) -> bool:
        return self.passed

    def score(self, out_of: float | None = None) -> float:
        """The points of the passed cases, scaled to ``out_of`` if it is given."""
        total = sum(case.points for case in self.cases)
        earned = sum(case.points for case in self.cases if case.passed)
        return earned if out_of is None else out_of * earned / total

    def assert_passed(self) -> Report:
        """Raise :class:`CheckFailed` unless every case passed; return the report."""
        if not self.passed:
            raise CheckFailed(self)
        return self

    def failures(self) -> list[Case]:
        return [case for case in self.cases if not case.passed]

    def __repr__(self) -> str:
        n_passed = sum(case.passed for case in self.cases)
        lines = [f"{self.check}: {n_passed}/{len(self.cases)} cases passed"]
        for case in self.cases:
            mark = "ok  " if case.passed else "FAIL"
            lines.append(f"  {mark} {case.name}" + ("" if case.passed else f": {case.message}"))
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{'✓' if case.passed else '✗'}</td><td>{html.escape(case.name)}</td>"
            f"<td>{html.escape(case.message)}</td><td>{case.points:g}</td></tr>"
            for case in self.cases
        )
        notes = "".join(f"<p>note: {html.escape(note)}</p>" for note in self.notes)
        total = sum(case.points for case in self.cases)
        return (f"<p><b>{html.escape(self.check)}</b>: {self.score():g} of {total:g} "
                f"points</p><table><tr><th></th><th>case</th><th>what went wrong</th>"
                f"<th>points</th></tr>{rows}</table>{notes}")

    def to_gradescope(self, path: str | Path, *, visibility: str = "visible") -> dict:
        """Add one Gradescope test entry per case to ``results.json`` at ``path``
        (created if missing, merged otherwise); return the file's content."""
        if visibility not in ("visible", "hidden", "after_due_date", "after_published"):
            raise ValueError(
                "visibility must be one of visible, hidden, after_due_date, "
                f"after_published, got {visibility!r}"
            )
        path = Path(path)
        results = json.loads(path.read_text()) if path.exists() else {}
        tests = results.setdefault("tests", [])
        for case in self.cases:
            tests.append({
                "name": f"{self.check}: {case.name}",
                "score": case.points if case.passed else 0.0,
                "max_score": case.points,
                "status": "passed" if case.passed else "failed",
                "output": case.message or "passed",
                "visibility": visibility,
            })
        results["score"] = sum(test["score"] for test in tests)
        path.write_text(json.dumps(results, indent=2))
        return results


class CheckFailed(AssertionError):  # noqa: N818 (the name graders and the issue use)
    """Raised by a check when a case fails; ``.report`` holds every case.

    Example:
        >>> report = Report("check_demo", [Case("values", False, "off by 0.5")])
        >>> try:
        ...     report.assert_passed()
        ... except CheckFailed as failure:  # an AssertionError, as graders expect
        ...     print(failure.report.failures()[0].name, isinstance(failure, AssertionError))
        values True
    """

    def __init__(self, report: Report) -> None:
        super().__init__(repr(report))
        self.report = report

    def _render_traceback_(self) -> list[str]:
        """IPython shows the report instead of a stack trace."""
        return repr(self.report).splitlines()


# --- running a student's code ----------------------------------------------------


class _Mismatch(Exception):  # noqa: N818 (a verdict, not an error)
    """A case's verdict: the student's output is not the expected one."""


def _run(check: str, cases: list[tuple[str, Callable[[], None]]], *,
         raise_on_fail: bool, notes: list[str] | None = None) -> Report:
    """Run each case; a raised ``_Mismatch`` or any exception fails it."""
    results: list[Case] = []
    notes = [] if notes is None else notes  # the cases may add to it while they run
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, case in cases:
            try:
                case()
                results.append(Case(name, True))
            except _Mismatch as mismatch:
                results.append(Case(name, False, str(mismatch)))
            except Exception as error:  # the student's code raised: report, never crash
                results.append(Case(name, False, f"your code raised {type(error).__name__}: "
                                                 f"{error}"))
    notes += [f"warning from your code: {w.category.__name__}: {w.message}" for w in caught]
    report = Report(check, results, notes)
    if raise_on_fail:
        report.assert_passed()
    return report


def _not_found(check: str, raise_on_fail: bool) -> Report:
    """The report for a function that is None: its cell was not run."""
    report = Report(check, [Case("found", False, "not found: did you run its cell?")])
    return report.assert_passed() if raise_on_fail else report


def _first(output: Any) -> Any:
    """The output, or the first item of an ``(output, weights)`` pair."""
    return output[0] if isinstance(output, tuple | list) else output


def _as_tensor(output: Any, what: str) -> torch.Tensor:
    if not isinstance(output, torch.Tensor):
        raise _Mismatch(f"{what} must return a torch.Tensor, got {type(output).__name__}")
    return output


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.to(F64), b.to(F64), rtol=1e-5,
                                                      atol=1e-6))


def _match_bug(output: torch.Tensor, bugs: dict[str, tuple[Callable[..., Any], str]],
               *args: Any) -> str:
    """Which planted bug gives ``output`` on ``args``: its description, or ''."""
    for bug, description in bugs.values():
        try:
            with torch.no_grad():
                planted = _first(bug(*args))
        except Exception:
            continue
        if isinstance(planted, torch.Tensor) and _close(output, planted):
            return description
    return ""


def _verdict(got: torch.Tensor, expected: torch.Tensor, given: str,
             bugs: dict[str, tuple[Callable[..., Any], str]], *args: Any) -> None:
    """Raise ``_Mismatch`` unless ``got`` is ``expected``: the shape, then the values
    (naming the planted bug that gives ``got`` on ``args``, if one does)."""
    if got.shape != expected.shape:
        raise _Mismatch(f"for {given}, expected an output of shape {_shape(expected)}, "
                        f"got {_shape(got)}")
    if not _close(got, expected):
        raise _Mismatch(_differ(got, expected, given, _match_bug(got, bugs, *args)))


def _differ(got: torch.Tensor, expected: torch.Tensor, given: str, likely: str) -> str:
    difference = (got.to(F64) - expected.to(F64)).abs()
    worst = difference.max().item() if difference.numel() else 0.0
    text = (f"for {given}, your output differs from the expected one by up to "
            f"{worst:.3g}")
    if torch.isnan(got).any():
        text = f"for {given}, your output has NaN where the expected one has numbers"
    return text + (f"; it equals {likely}" if likely else "")


def _keep_random_state(check: Callable[..., Report]) -> Callable[..., Report]:
    """Run ``check`` without changing the random state of the student's session
    (the check seeds and draws; the student's next torch.rand must not notice)."""

    @functools.wraps(check)
    def wrapped(*args: Any, **kwargs: Any) -> Report:
        with torch.random.fork_rng(devices=[]):
            return check(*args, **kwargs)

    return wrapped


# --- attention -------------------------------------------------------------------


def _attention_bugs() -> dict[str, tuple[Callable[..., Any], str]]:
    def scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
        return scale * q @ k.transpose(-2, -1)

    def finish(s: torch.Tensor, v: torch.Tensor, dim: int = -1) -> torch.Tensor:
        return s.softmax(dim=dim) @ v

    def fill(s: torch.Tensor, allowed: torch.Tensor | None, value: float) -> torch.Tensor:
        return s if allowed is None else s.masked_fill(~allowed, value)

    return {
        "no_scale": (lambda q, k, v, m=None: finish(fill(scores(q, k, 1.0), m, -math.inf), v),
                     "attention without the 1/sqrt(d_k) scale"),
        "scale_1_over_d_k": (
            lambda q, k, v, m=None: finish(fill(scores(q, k, 1 / q.shape[-1]), m, -math.inf), v),
            "attention scaled by 1/d_k instead of 1/sqrt(d_k)"),
        "scale_by_d_v": (
            lambda q, k, v, m=None: finish(
                fill(scores(q, k, v.shape[-1] ** -0.5), m, -math.inf), v),
            "attention scaled by 1/sqrt(d_v), the values' width, instead of 1/sqrt(d_k)"),
        "softmax_over_queries": (
            lambda q, k, v, m=None: finish(
                fill(scores(q, k, q.shape[-1] ** -0.5), m, -math.inf), v, dim=-2),
            "attention with the softmax over queries (dim=-2): the weights sum to 1 "
            "over queries, not keys: softmax over the wrong axis?"),
        "mask_inverted": (
            lambda q, k, v, m=None: finish(
                fill(scores(q, k, q.shape[-1] ** -0.5), None if m is None else ~m,
                     -math.inf), v),
            "attention with the mask inverted: True must mean 'may attend' (PyTorch's "
            "key_padding_mask uses the opposite convention)"),
        "mask_ignored": (
            lambda q, k, v, m=None: finish(scores(q, k, q.shape[-1] ** -0.5), v),
            "attention with the mask ignored"),
        "finite_mask": (
            lambda q, k, v, m=None: finish(fill(scores(q, k, q.shape[-1] ** -0.5), m, -1e4), v),
            "attention with masked scores set to -1e4, which leaks when the scores are "
            "large: use -inf (and handle rows with no key)"),
    }


def _sizes(generator: torch.Generator, seed: int) -> list[int]:
    """Six distinct sizes (batch, heads, n_q, n_k, d_k, d_v): fixed for seed 0."""
    if seed == 0:
        return [2, 3, 4, 5, 6, 7]
    return (torch.randperm(8, generator=generator)[:6] + 2).tolist()


@_keep_random_state
def check_attention(fn: Callable[..., Any] | None, *, seed: int = 0,
                    raise_on_fail: bool = True) -> Report:
    """Check ``fn(query, key, value, mask=None)``: scaled dot-product attention,
    mask True = may attend, returning the output (or ``(output, weights)``).

    Cases: the output's shape; its values without a mask; with a mask; with a mask
    and large scores (a finite "large negative" leaks); a query with no allowed
    key (no NaN). Known bugs named: no or wrong scale, softmax over the wrong
    axis, mask inverted or ignored, a finite -1e4 mask.

    Shape:
        ``seed=0``: query ``(2, 3, 4, 6)``, key ``(2, 3, 5, 6)``, value
        ``(2, 3, 5, 7)``, mask ``(2, 3, 4, 5)``: batch, heads, queries, keys, d_k
        and d_v all differ. Another seed draws six other distinct sizes. The
        output must be ``(2, 3, 4, 7)``, one row of width d_v per query.

    Example:
        >>> from tinyformer import dot_product_attention
        >>> check_attention(dot_product_attention).passed
        True
        >>> def unscaled(query, key, value, mask=None):  # two bugs
        ...     return (query @ key.transpose(-2, -1)).softmax(dim=-1) @ value
        >>> report = check_attention(unscaled, raise_on_fail=False)
        >>> report.passed, report.failures()[0].message.endswith("1/sqrt(d_k) scale")
        (False, True)
    """
    name = "check_attention"
    if fn is None:
        return _not_found(name, raise_on_fail)
    g = torch.Generator().manual_seed(seed)
    b, h, n_q, n_k, d_k, d_v = _sizes(g, seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g, dtype=F64)
               for n, d in ((n_q, d_k), (n_k, d_k), (n_k, d_v)))
    mask = torch.rand(b, h, n_q, n_k, generator=g) > 0.4
    mask[..., 0] |= ~mask.any(dim=-1)  # every query keeps a key
    bugs = _attention_bugs()

    def compare(given: str, *args: torch.Tensor) -> None:
        given += f" (query {_shape(q)}, key {_shape(k)}, value {_shape(v)})"
        expected = _first(dot_product_attention(*args))
        with torch.no_grad():
            got = _as_tensor(_first(fn(*args)), "fn")
        _verdict(got, expected, given, bugs, *args)

    def shape() -> None:
        with torch.no_grad():
            got = _as_tensor(_first(fn(q, k, v)), "fn")
        expected = (b, h, n_q, d_v)
        if _shape(got) != expected:
            hint = ""
            if _shape(got) == (b, h, n_q, d_k):
                hint = f": the output must have the values' width d_v ({d_v}), not d_k ({d_k})"
            elif _shape(got) == (b, h, n_k, d_v):
                hint = ": one row per key instead of one per query"
            raise _Mismatch(f"for query {_shape(q)}, key {_shape(k)}, value {_shape(v)}, "
                            f"expected shape {expected}, got {_shape(got)}{hint}")

    def no_row_nan() -> None:
        empty = mask.clone()
        empty[0, 0, 1] = False  # query 1 of the first sequence's first head: no key
        with torch.no_grad():
            got = _as_tensor(_first(fn(q, k, v, empty)), "fn")
        if not torch.isfinite(got).all():
            raise _Mismatch("a query whose mask row is all False got NaN or inf: give it "
                            "zeros (e.g. torch.nan_to_num on the weights, or torch.where)")

    cases = [
        ("output shape", shape),
        ("no mask", lambda: compare("random query, key, value without a mask", q, k, v)),
        ("mask", lambda: compare("a random mask (True = may attend)", q, k, v, mask)),
        ("mask with large scores", lambda: compare(
            "a mask and scores of about 1e5 (query times 1e5)", q * 1e5, k, v, mask)),
        ("query with no key", no_row_nan),
    ]
    return _run(name, cases, raise_on_fail=raise_on_fail)


# --- multi-head attention ----------------------------------------------------------


class _ReferenceMultiHead(nn.Module):
    """A plain multi-head attention with PyTorch's parameter names, used to plant bugs."""

    def __init__(self, d_model: int, n_heads: int, bug: str = "") -> None:
        super().__init__()
        self.n_heads, self.bug = n_heads, bug
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(d_model, d_model, dtype=F64) for _ in range(4))

    def forward(self, query: torch.Tensor, key: torch.Tensor,
                value: torch.Tensor) -> torch.Tensor:
        if self.bug == "sequence_first":  # (batch, n, d) read as (n, batch, d)
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        b, n_q, d = query.shape
        h = self.n_heads

        def split(x: torch.Tensor) -> torch.Tensor:
            if self.bug == "split_without_transpose":
                return x.reshape(x.shape[0], h, x.shape[1], d // h)
            return x.reshape(x.shape[0], x.shape[1], h, d // h).transpose(1, 2)

        q, k, v = split(self.q_proj(query)), split(self.k_proj(key)), split(self.v_proj(value))
        weights = (q @ k.transpose(-2, -1) / (d // h) ** 0.5).softmax(dim=-1)
        if self.bug == "dropout_always":
            weights = nn.functional.dropout(weights, p=0.5, training=True)
        heads = weights @ v  # (b, h, n_q, d_head)
        if self.bug == "merge_without_transpose":
            merged = heads.reshape(b, n_q, d)
        else:
            merged = heads.transpose(1, 2).reshape(b, n_q, d)
        output = merged if self.bug == "no_output_projection" else self.out_proj(merged)
        return output.transpose(0, 1) if self.bug == "sequence_first" else output


_MULTIHEAD_BUGS = {
    "split_without_transpose": "heads split with a reshape to (batch, heads, n, d_head) "
    "without the transpose: each head gets a slice of positions, not of features",
    "merge_without_transpose": "heads merged in the wrong order: reshape of (batch, heads, "
    "n, d_head) to (batch, n, d_model) without transposing back",
    "no_output_projection": "the heads concatenated without the output projection out_proj",
    "sequence_first": "a batch-first input read as sequence-first (n, batch, d): batch "
    "items attend to each other",
    "dropout_always": "dropout applied in eval() too",
}


def _copy_projections(source: nn.Module, target: nn.Module) -> None:
    with torch.no_grad():
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            mine, theirs = getattr(source, name), getattr(target, name)
            theirs.weight.copy_(mine.weight)
            if getattr(theirs, "bias", None) is not None:
                theirs.bias.copy_(mine.bias)


@_keep_random_state
def check_multihead(cls_or_module: type[nn.Module] | nn.Module | None, *, d_model: int = 12,
                    n_heads: int = 3, seed: int = 0, raise_on_fail: bool = True) -> Report:
    """Check a multi-head attention module with ``q_proj``, ``k_proj``, ``v_proj`` and
    ``out_proj`` (``nn.Linear``, as in :class:`torch.nn.MultiheadAttention`) and a
    ``forward(query, key, value)`` returning the output (or ``(output, weights)``).

    A class is built as ``cls(d_model, n_heads)``. The reference's weights are copied
    into it; it is put in ``eval()``. Cases: the projections exist and the parameter
    count is the reference's; self-attention and cross-attention (another length)
    equal the reference's; batch items do not affect each other; two calls in
    ``eval()`` agree (no dropout). Known bugs named: head split without transpose,
    heads merged in the wrong order, no output projection, batch items mixed,
    dropout in ``eval()``.

    Shape:
        query ``(2, 4, d_model)``, key and value ``(2, 5, d_model)``; the output
        must be ``(2, 4, d_model)``.

    Example:
        >>> from tinyformer import MultiHeadAttention
        >>> check_multihead(MultiHeadAttention).passed  # a class: built as cls(12, 3)
        True
    """
    name = "check_multihead"
    if cls_or_module is None:
        return _not_found(name, raise_on_fail)
    torch.manual_seed(seed)  # the student's own initialisation, made deterministic
    module = (cls_or_module(d_model, n_heads) if isinstance(cls_or_module, type)
              else cls_or_module)
    reference = MultiHeadAttention(d_model, n_heads, dtype=F64).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=g, dtype=F64) * 0.3)
    x = torch.randn(2, 4, d_model, generator=g, dtype=F64)
    memory = torch.randn(2, 5, d_model, generator=g, dtype=F64)
    state: dict[str, nn.Module] = {}

    def projections() -> None:
        missing = [p for p in ("q_proj", "k_proj", "v_proj", "out_proj")
                   if not isinstance(getattr(module, p, None), nn.Linear)]
        if missing:
            raise _Mismatch(f"expected nn.Linear attributes q_proj, k_proj, v_proj and "
                            f"out_proj; missing: {', '.join(missing)}")
        ours = sum(p.numel() for p in reference.parameters())
        theirs = sum(p.numel() for p in module.parameters())
        module.to(F64)
        _copy_projections(reference, module)
        module.eval()
        state["module"] = module
        if theirs != ours:
            unused = ("; with no output projection it would have "
                      f"{ours - d_model * d_model - d_model}" if theirs < ours else "")
            raise _Mismatch(f"with d_model={d_model}, n_heads={n_heads} expected {ours} "
                            f"parameters (four d_model x d_model projections with biases), "
                            f"got {theirs}{unused}")

    def call(*args: torch.Tensor) -> torch.Tensor:
        if "module" not in state:
            raise _Mismatch("skipped: the projections could not be copied")
        with torch.no_grad():
            return _as_tensor(_first(state["module"](*args)), "the module")

    def planted(bug: str) -> nn.Module:
        copy = _ReferenceMultiHead(d_model, n_heads, bug)
        _copy_projections(reference, copy)
        return copy.eval()

    bugs: dict[str, tuple[Callable[..., Any], str]] = {
        bug: (planted(bug), text) for bug, text in _MULTIHEAD_BUGS.items()}

    def compare(given: str, *args: torch.Tensor) -> None:
        expected = _first(reference(*args))
        _verdict(call(*args), expected, given, bugs, *args)

    def batch_independent() -> None:
        other = x.clone()
        other[1] = torch.randn(4, d_model, generator=g, dtype=F64)
        first, second = call(x, x, x), call(other, other, other)
        if not torch.allclose(first[0], second[0], atol=1e-9):
            raise _Mismatch("changing batch item 1 changed the output of batch item 0: "
                            "batch items attend to each other (a sequence-first reshape?)")

    def deterministic() -> None:
        if not torch.equal(call(x, x, x), call(x, x, x)):
            raise _Mismatch("two calls in eval() gave different outputs: "
                            f"{_MULTIHEAD_BUGS['dropout_always']}? Dropout must only act "
                            "in train() (use self.training or nn.Dropout)")

    cases = [
        ("projections and parameter count", projections),
        ("self-attention", lambda: compare(f"query = key = value of shape {_shape(x)}",
                                           x, x, x)),
        ("cross-attention", lambda: compare(
            f"query {_shape(x)}, key = value {_shape(memory)}", x, memory, memory)),
        ("batch items independent", batch_independent),
        ("no dropout in eval()", deterministic),
    ]
    return _run(name, cases, raise_on_fail=raise_on_fail)


# --- causal attention ------------------------------------------------------------


def _causal_bugs(d: int) -> dict[str, tuple[Callable[..., Any], str]]:
    def attend(x: torch.Tensor, offset: int | None) -> torch.Tensor:
        n = x.shape[-2]
        i, j = torch.arange(n)[:, None], torch.arange(n)
        allowed = None if offset is None else j <= i + offset
        return _first(dot_product_attention(x, x, x, allowed))

    return {
        "no_mask": (lambda x: attend(x, None), "attention with no causal mask"),
        "strict": (lambda x: attend(x, -1), "a causal mask that hides each token's own "
                   "position (j < i instead of j <= i)"),
        "one_ahead": (lambda x: attend(x, 1), "a causal mask shifted by one: each token "
                      "sees the next one (j <= i + 1)"),
    }


@_keep_random_state
def check_causal(fn_or_module: Callable[[torch.Tensor], Any] | None, *, d_model: int = 6,
                 seed: int = 0, raise_on_fail: bool = True) -> Report:
    """Check that ``fn(x)`` (or a module) is causal over ``x`` of shape
    ``(batch, n, d_model)``: output ``i`` depends on inputs ``0..i`` only.

    Cases: perturbing the future leaves the past unchanged; the gradient of each
    output with respect to later inputs is zero; each output depends on its own
    input, and output 0 on input 0 (an off-by-one mask fails); no NaN. Known bugs
    named: no mask, a strict mask (j < i), a mask one ahead (j <= i + 1).

    Shape:
        x ``(2, 5, d_model)``; the output must be ``(2, 5, ...)``, one row per
        position.

    Example:
        >>> from tinyformer import dot_product_attention
        >>> check_causal(lambda x: dot_product_attention(x, x, x, is_causal=True)).passed
        True
        >>> report = check_causal(lambda x: dot_product_attention(x, x, x),
        ...                       raise_on_fail=False)
        >>> report.passed, "no causal mask" in report.failures()[0].message
        (False, True)
    """
    name = "check_causal"
    if fn_or_module is None:
        return _not_found(name, raise_on_fail)
    if isinstance(fn_or_module, nn.Module):
        fn_or_module = fn_or_module.to(F64).eval()
    fn = fn_or_module
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, d_model, generator=g, dtype=F64)
    bugs = _causal_bugs(d_model)

    def output(inputs: torch.Tensor) -> torch.Tensor:
        got = _as_tensor(_first(fn(inputs)), "fn")
        if got.dim() != 3 or got.shape[:2] != inputs.shape[:2]:
            raise _Mismatch(f"for x of shape {_shape(inputs)} expected an output of shape "
                            f"(2, 5, ...), one row per position, got {_shape(got)}")
        return got

    def likely(got: torch.Tensor) -> str:
        cause = _match_bug(got, bugs, x)
        return f"; it equals {cause}" if cause else ""

    def perturbation() -> None:
        with torch.no_grad():
            base = output(x)
            for t in range(4):
                changed = x.clone()
                changed[:, t + 1:] = torch.randn(2, 4 - t, d_model, generator=g, dtype=F64)
                if not torch.allclose(output(changed)[:, : t + 1], base[:, : t + 1],
                                      atol=1e-9, equal_nan=True):
                    raise _Mismatch(f"changing positions {t + 1}..4 changed the output at "
                                    f"position {t} or before: the future leaks"
                                    f"{likely(base)}")

    def gradient() -> None:
        inputs = x.clone().requires_grad_(True)
        got = output(inputs)
        for i in range(4):  # the last output may depend on everything
            (grad,) = torch.autograd.grad(got[:, i].sum(), inputs, retain_graph=True,
                                          allow_unused=True)
            if grad is not None and grad[:, i + 1:].abs().max() > 0:
                raise _Mismatch(f"the gradient of output {i} with respect to a later "
                                f"input is not zero{likely(got.detach())}")

    def own_position() -> None:
        inputs = x.clone().requires_grad_(True)
        got = output(inputs)
        if not torch.isfinite(got).all():
            raise _Mismatch(f"the output has NaN or inf{likely(got.detach())}: does the "
                            f"first position see no key?")
        for i in range(5):
            (grad,) = torch.autograd.grad(got[:, i].sum(), inputs, retain_graph=True,
                                          allow_unused=True)
            if grad is None or grad[:, i].abs().max() == 0:
                raise _Mismatch(f"output {i} does not depend on input {i}: each position "
                                f"must see itself (j <= i, not j < i){likely(got.detach())}")

    cases = [
        ("no leak by perturbation", perturbation),
        ("no leak by gradient", gradient),
        ("each position sees itself", own_position),
    ]
    return _run(name, cases, raise_on_fail=raise_on_fail)


# --- position encoding -----------------------------------------------------------


def _positional_bugs() -> dict[str, tuple[Callable[..., Any], str]]:
    def encoding(n: int, d: int, *, exponent: float = 2.0, base: float = 1e4,
                 start: int = 0, swap: bool = False) -> torch.Tensor:
        position = torch.arange(start, start + n, dtype=F64)[:, None]
        pair = torch.arange(d // 2, dtype=F64)
        angle = position * base ** (-exponent * pair / d)
        first, second = (torch.cos(angle), torch.sin(angle)) if swap else (
            torch.sin(angle), torch.cos(angle))
        return torch.stack([first, second], dim=-1).reshape(n, d)

    return {
        "exponent_i_over_d": (lambda n, d: encoding(n, d, exponent=1.0),
                              "frequencies 10000^(-i/d) instead of 10000^(-2i/d)"),
        "base_1000": (lambda n, d: encoding(n, d, base=1e3), "the base 1000 instead of 10000"),
        "positions_from_1": (lambda n, d: encoding(n, d, start=1),
                             "positions counted from 1 instead of 0"),
        "cos_sin": (lambda n, d: encoding(n, d, swap=True),
                    "cosines in the even features and sines in the odd ones"),
    }


@_keep_random_state
def check_positional_encoding(fn: Callable[[int, int], Any] | None, *, seed: int = 0,
                              raise_on_fail: bool = True) -> Report:
    """Check ``fn(n_positions, d_model)``: the paper's sinusoidal encoding,
    ``PE[p, 2i] = sin(p / 10000^(2i/d))``, ``PE[p, 2i+1] = cos(...)``.

    Cases: the shape; row 0 is ``0, 1, 0, 1, ...``; the whole table (each pair's
    frequency ``10000^(-2i/d)``); ``sin^2 + cos^2 = 1`` per pair; the shift
    ``PE[p + k] = PE[p]`` turned by a fixed rotation per pair. All sines first, then
    all cosines, is another convention: accepted, with a note. Known bugs named:
    the exponent, the base, positions from 1, sines and cosines swapped.

    Shape:
        ``fn(50, 16)`` and ``fn(7, 10)`` must return ``(50, 16)`` and ``(7, 10)``.

    Example:
        >>> from tinyformer import sinusoidal_encoding
        >>> check_positional_encoding(sinusoidal_encoding).passed
        True
        >>> from_1 = planted_bugs("positional_encoding")["positions_from_1"]
        >>> report = check_positional_encoding(from_1, raise_on_fail=False)
        >>> report.passed, "positions counted from 1" in report.failures()[0].message
        (False, True)
    """
    name = "check_positional_encoding"
    if fn is None:
        return _not_found(name, raise_on_fail)
    del seed  # the encoding has no randomness; kept for a uniform signature
    notes: list[str] = []
    bugs = _positional_bugs()
    tables: dict[tuple[int, int], torch.Tensor] = {}

    def table(n: int, d: int) -> torch.Tensor:
        if (n, d) not in tables:
            with torch.no_grad():
                got = _as_tensor(_first(fn(n, d)), "fn").to(F64)
            if _shape(got) != (n, d):
                raise _Mismatch(f"fn({n}, {d}) must return shape ({n}, {d}), one row per "
                                f"position, got {_shape(got)}")
            if got.shape[-1] == d and d % 2 == 0:
                expected = sinusoidal_encoding(n, d, dtype=F64)
                concatenated = torch.cat([expected[:, 0::2], expected[:, 1::2]], dim=-1)
                if _close(got, concatenated) and not _close(got, expected):
                    note = ("your encoding puts all sines first, then all cosines: another "
                            "convention (a permutation of the features), not the paper's "
                            "interleaved layout; accepted")
                    if note not in notes:
                        notes.append(note)
                    got = expected  # graded in the paper's layout from here
            tables[(n, d)] = got
        return tables[(n, d)]

    def shape() -> None:
        table(50, 16)
        table(7, 10)

    def row_zero() -> None:
        got = table(50, 16)[0]
        expected = torch.tensor([0.0, 1.0] * 8, dtype=F64)
        if not _close(got, expected):
            raise _Mismatch(f"row 0 (position 0) must be 0, 1, 0, 1, ... (sin 0, cos 0), "
                            f"got {[round(v, 3) for v in got[:6].tolist()]}, ..."
                            f"{_likely_table(bugs, 50, 16, table(50, 16))}")

    def values() -> None:
        for n, d in ((50, 16), (7, 10)):
            got, expected = table(n, d), sinusoidal_encoding(n, d, dtype=F64)
            if not _close(got, expected):
                raise _Mismatch(_differ(got, expected, f"fn({n}, {d})",
                                        _match_bug(got, bugs, n, d)))

    def unit_pairs() -> None:
        got = table(50, 16)
        norms = got[:, 0::2] ** 2 + got[:, 1::2] ** 2
        if not torch.allclose(norms, torch.ones_like(norms), atol=1e-6):
            raise _Mismatch("for each position and pair, sin^2 + cos^2 must be 1, got "
                            f"values from {norms.min().item():.3g} to {norms.max().item():.3g}")

    def shift() -> None:
        got, k = table(50, 16), 3
        a, b = got[:-k], got[k:]  # PE[p] and PE[p + k]
        for pair in range(8):
            u, w = a[:, 2 * pair: 2 * pair + 2], b[:, 2 * pair: 2 * pair + 2]
            rotation = torch.linalg.lstsq(u, w).solution  # w = u R, fitted
            if not torch.allclose(u @ rotation, w, atol=1e-6):
                raise _Mismatch(f"PE[p + {k}] is not PE[p] times one fixed 2x2 matrix for "
                                f"pair {pair}: the rows must be sin and cos of position "
                                "times a frequency")

    cases = [
        ("output shape", shape),
        ("row 0", row_zero),
        ("values", values),
        ("sin^2 + cos^2 = 1", unit_pairs),
        ("shift is a rotation", shift),
    ]
    return _run(name, cases, raise_on_fail=raise_on_fail, notes=notes)


def _likely_table(bugs: dict[str, tuple[Callable[..., Any], str]], n: int, d: int,
                  got: torch.Tensor) -> str:
    cause = _match_bug(got, bugs, n, d)
    return f"; it equals {cause}" if cause else ""


def planted_bugs(check: str) -> dict[str, Callable[..., Any]]:
    """The planted-bug versions of a check's reference, by name: for tests and for
    instructors who want to see what a check says about each.

    Example:
        >>> sorted(planted_bugs("attention"))[:3]
        ['finite_mask', 'mask_ignored', 'mask_inverted']
    """
    if check == "attention":
        return {bug: fn for bug, (fn, _) in _attention_bugs().items()}
    if check == "causal":
        return {bug: fn for bug, (fn, _) in _causal_bugs(6).items()}
    if check == "positional_encoding":
        return {bug: fn for bug, (fn, _) in _positional_bugs().items()}
    if check == "multihead":
        return {bug: (lambda d_model, n_heads, bug=bug: _ReferenceMultiHead(d_model, n_heads,
                                                                             bug))
                for bug in _MULTIHEAD_BUGS}
    raise ValueError("check must be one of attention, multihead, causal, "
                     f"positional_encoding, got {check!r}")

