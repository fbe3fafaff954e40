"""benchmarks/compare.py end to end on a tiny scikit-learn digits run (8x8 images, CPU, in-process)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from ideal_pipeline.teacher.ledger import QueryLedger

COMPARE = Path(__file__).resolve().parents[1] / "benchmarks" / "compare.py"
Q = 200
TRAINED = ["ideal", "ideal_redistilled", "uniform_noise", "untrained_generator", "real_data"]


def load_compare():
    spec = importlib.util.spec_from_file_location("compare_benchmark", COMPARE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_compare(out: Path, *args: str) -> dict[str, Path]:
    """The tiny configuration; the teacher is cached under `out`'s parent, shared by every run here."""
    threads = torch.get_num_threads()
    try:
        return load_compare().main([
            "--dataset", "sklearn_digits", "--queries", str(Q),
            "--set", "rounds=2", "--set", "generator.ngf=8", "--set", "generator.g_steps=3",
            "--set", "teacher.epochs=3", "--threads", "1",
            "--out-dir", str(out), "--teacher-dir", str(out.parent / "teachers"), *args,
        ])  # fmt: skip
    finally:
        torch.set_num_threads(threads)  # --threads sets torch's global thread count


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    paths = run_compare(
        tmp_path_factory.mktemp("compare") / "all", "--seeds", "0", "--methods", *TRAINED, "reference_accounting"
    )
    return paths, pd.read_csv(paths["runs_csv"]), pd.read_csv(paths["csv"])


@pytest.mark.timeout(300)
def test_compare_writes_the_csv_markdown_and_plot(tiny_run):
    paths, _, summary = tiny_run
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = paths["md"].read_text()
    for method in TRAINED:
        assert f"| {method} |" in markdown
    assert "computed, not trained" in markdown
    assert set(summary["method"]) == {*TRAINED, "reference_accounting"}
    for stage in ("generation", "labelling", "distillation", "evaluation"):
        assert (summary.loc[summary["trained"], f"{stage}_s_mean"] >= 0).all()


@pytest.mark.timeout(300)
def test_every_methods_reported_queries_are_the_ledgers_count_and_equal_the_budget(tiny_run):
    paths, runs, _ = tiny_run
    final = runs[runs["round"] == runs["round"].max()].set_index("method")
    for method in TRAINED:
        # The re-distilled student pays nothing: it is credited with the labels IDEAL's ledger holds.
        ledger_file = "ideal" if method == "ideal_redistilled" else method
        ledger = QueryLedger(paths["ledgers"] / f"{ledger_file}_seed0.sqlite")
        try:
            assert ledger.paid_queries() == Q, method
        finally:
            ledger.close()
        assert final.loc[method, "queries_paid"] == Q, method
    # Intermediate checkpoints too: one round of B=50 images and their mirrors.
    first = runs[runs["round"] == 1]
    assert (first["queries_paid"] == Q // 2).all()


@pytest.mark.timeout(300)
def test_accuracies_are_fractions_and_the_reference_accounting_is_computed_not_trained(tiny_run):
    _, runs, summary = tiny_run
    for column in ("accuracy", "agreement"):
        assert runs[column].between(0, 1).all()
    reference = summary[summary["method"] == "reference_accounting"].set_index("round")
    # B=50 images a round, the whole pool re-labelled every round: 50 * 2 * 3 / 2 after 2 rounds.
    assert reference.loc[2, "queries_paid_mean"] == 150
    assert reference["accuracy_mean"].isna().all() and not reference["trained"].any()


@pytest.mark.timeout(300)
def test_merge_reports_runs_from_separate_processes_together(tiny_run):
    first = tiny_run[0]["csv"].parent
    second = run_compare(first.parent / "seed1", "--seeds", "1", "--methods", "ideal", "real_data")["csv"].parent
    merged = load_compare().main(["--dataset", "sklearn_digits", "--merge", str(first), str(second),
                                  "--out-dir", str(first.parent / "merged")])  # fmt: skip
    summary = pd.read_csv(merged["csv"]).set_index(["method", "round"])
    assert summary.loc[("ideal", 2), "seeds"] == 2 and summary.loc[("uniform_noise", 2), "seeds"] == 1
    assert summary.loc[("real_data", 2), "accuracy_std"] >= 0
    with pytest.raises(ValueError, match="appear twice"):
        load_compare().main(["--dataset", "sklearn_digits", "--merge", str(first), str(first),
                             "--out-dir", str(first.parent / "twice")])  # fmt: skip


def test_redistill_epochs_reads_a_finished_run_and_spends_nothing(ran_project, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("redistill_epochs", COMPARE.with_name("redistill_epochs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ledger = ran_project / "data/03_primary/teacher_query_ledger.sqlite"
    paid_before = QueryLedger(ledger).paid_queries()
    out = tmp_path / "redistill_epochs"
    monkeypatch.chdir(ran_project)
    monkeypatch.setattr(sys, "argv", ["redistill_epochs.py", "--project", str(ran_project), "--env", "test",
                                      "--epochs", "1", "2", "--fresh-epochs", "1", "--out", str(out)])  # fmt: skip
    module.main()
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["init"], r["epochs"]) for r in rows] == [("final_student", 0), ("final_student", 1), ("final_student", 2), ("fresh", 1)]
    metrics = json.loads((ran_project / "data/08_reporting/evaluate/metrics.json").read_text())
    assert rows[0]["accuracy"] == pytest.approx(metrics["student_accuracy"])  # epochs 0 is the pipeline's student
    assert QueryLedger(ledger).paid_queries() == paid_before
