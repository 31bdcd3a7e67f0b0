"""The benchmark runs and measures every case (tiny sizes, so it cannot rot)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "attention.py"


def test_attention_benchmark_reports_a_ratio_for_every_case(capsys):
    spec = importlib.util.spec_from_file_location("attention_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--lengths", "16", "--batch", "2", "--heads", "2", "--min-time", "0.001"])
    assert len(rows) == 2 * 2 * 3  # mask or not, backward or not, three implementations
    assert all(math.isfinite(row["ms"]) and row["ms"] > 0 for row in rows)
    assert {row["time_ratio"] for row in rows if row["implementation"] == "pytorch sdpa"} == {1.0}
    assert "ours, with weights" in capsys.readouterr().out


def test_attention_benchmark_times_the_compiled_fast_path():
    spec = importlib.util.spec_from_file_location("attention_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(
        ["--lengths", "8", "--batch", "1", "--heads", "1", "--min-time", "0.001", "--compile"]
    )
    compiled = [row for row in rows if row["implementation"] == "ours, compiled"]
    assert len(compiled) == 4  # mask or not, backward or not
    assert all(math.isfinite(row["ms"]) and row["ms"] > 0 for row in compiled)


def test_multihead_benchmark_reports_a_ratio_for_every_case():
    path = PATH.parent / "multihead.py"
    spec = importlib.util.spec_from_file_location("multihead_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--smoke"])
    assert [row["case"] for row in rows] == ["inference", "fwd+bwd", "fwd+bwd"]
    assert all(math.isfinite(row["ratio"]) and row["ratio"] > 0 for row in rows)


def test_transformer_benchmark_checks_equality_then_reports_throughputs():
    path = PATH.parent / "transformer.py"
    spec = importlib.util.spec_from_file_location("transformer_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--smoke"])
    assert result["difference"] < 1e-4  # the same weights give the same logits
    assert set(result["tokens_per_second"]) == {"pytorch", "ours"}
    assert math.isfinite(result["ratio"]) and result["ratio"] > 0


def test_accuracy_report_is_round_off_in_both_precisions():
    path = PATH.parent / "accuracy.py"
    spec = importlib.util.spec_from_file_location("accuracy_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--cases", "4"])
    assert len(results["float64"]) == 4
    assert max(results["float64"].values()) < 1e-12
    assert max(results["float32"].values()) < 1e-5


def test_efficient_benchmark_measures_every_case_in_its_own_process(capsys):
    path = PATH.parent / "efficient.py"
    spec = importlib.util.spec_from_file_location("efficient_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--smoke"])
    assert len(rows) == 2 * 3  # forward or fwd+bwd, three implementations
    assert all(math.isfinite(row["ms"]) and row["ms"] > 0 for row in rows)
    assert all(row["peak_mb"] >= 0 for row in rows)
    explicit = [row for row in rows if row["implementation"] == "explicit"]
    assert all(row["peak_mb"] > 0 for row in explicit)  # the (n, n) weights are real
    assert "bar: chunked forward peak" in capsys.readouterr().out
