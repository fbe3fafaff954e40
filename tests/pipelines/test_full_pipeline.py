"""The whole default pipeline in the test environment, through a Kedro session."""

import json
import os
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file

from ideal_pipeline.compute import resolve_compute, signature
from ideal_pipeline.config import parameters_from_conf
from ideal_pipeline.parameter_schema import ParameterError
from ideal_pipeline.run_lock import RunLock, RunLocked
from tests.conftest import DATA, paid_queries, run_kedro

pytestmark = pytest.mark.timeout(300)


def ideal_params(project):
    return parameters_from_conf(project, env="test")["ideal"]


def read_json(project, path):
    return json.loads((project / path).read_text())


def ledger_paid(project, method="ideal"):
    return paid_queries(project / "label-store", f"{method}/")


def test_queries_used_is_rounds_times_samples_per_round(ran_project):
    params = ideal_params(ran_project)
    per_round = params["batch_size"] * (2 if params["label_mirrors"] else 1)
    metrics = read_json(ran_project, f"{DATA}/08_reporting/evaluate/metrics.json")
    assert metrics["queries_used"] == params["rounds"] * per_round
    assert ledger_paid(ran_project) == metrics["queries_used"]
    for key in (
        "student_accuracy",
        "validation_accuracy",
        "teacher_accuracy",
        "agreement",
        "redistilled_student_accuracy",
        "student_accuracy_last5_mean",
    ):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["teacher_accuracy"] > 0.5  # a real teacher, trained on real Fashion-MNIST
    rounds, batch = params["rounds"], params["batch_size"]
    assert metrics["reference_code_queries"] == batch * rounds * (rounds + 1) // 2
    # What "auto" resolved to on this machine, so that runs on different CPUs are not mixed up.
    auto = {"device": "cpu", "num_threads": 0, "precision": "auto"}
    expected = "bf16" if resolve_compute(auto).precision == torch.bfloat16 else "fp32"
    assert (metrics["device"], metrics["precision"]) == ("cpu", expected)
    assert metrics["processor"] == signature(resolve_compute(auto))["processor"] != ""


def test_each_round_labels_its_own_new_samples_exactly_once(ran_project):
    params = ideal_params(ran_project)
    seen = set()
    for r in range(1, params["rounds"] + 1):
        folder = ran_project / f"{DATA}/05_model_input/ideal/round_{r:03d}"
        images = load_file(folder / "synthetic_images.safetensors")["tensor"]
        labels = load_file(folder / "teacher_labels.safetensors")["tensor"]
        receipt = json.loads((folder / "labelling_receipt.json").read_text())
        assert images.dtype == torch.uint8 and images.shape == (2 * params["batch_size"], 1, 28, 28)
        assert labels.dtype == torch.int64 and len(labels) == len(images)
        assert receipt["queries_paid_now"] == len(images) and receipt["labels_reused_from_ledger"] == 0
        # The second half are the mirrors of the first: new images with their own labels.
        assert torch.equal(images[params["batch_size"] :], images[: params["batch_size"]].flip(-1))
        seen |= {bytes(image.numpy().tobytes()) for image in images}
    assert len(seen) == ledger_paid(ran_project)


def test_every_round_logs_its_coverage_of_the_targets(ran_project):
    params = ideal_params(ran_project)
    summary = read_json(ran_project, f"{DATA}/06_models/ideal/round_{params['rounds']:03d}/pool_summary.json")
    assert 0.0 <= summary["target_hit_rate"] <= 1.0
    assert summary["smallest_class_count"] == min(summary["class_counts"])
    assert summary["method"] == "ideal"


def test_reports_are_written(ran_project):
    report = ran_project / f"{DATA}/08_reporting/evaluate"
    for name in ("accuracy_vs_queries.png", "class_coverage.png", "synthetic_grid.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (report / "accuracy_vs_queries.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["round", "queries_used", "validation_accuracy", "student_accuracy", "agreement"]
    assert len(rows) == 1 + ideal_params(ran_project)["rounds"]
    card = read_json(ran_project, f"{DATA}/06_models/victim/teacher_api.json")
    assert card["input_shape"] == [1, 28, 28] and card["num_classes"] == 10


def test_the_validation_split_is_held_out_of_the_training_images(ran_project):
    train = load_file(ran_project / f"{DATA}/02_intermediate/real/real_train.safetensors")["images"]
    validation = load_file(ran_project / f"{DATA}/02_intermediate/real/real_validation.safetensors")["images"]
    seen = {bytes(image.numpy().tobytes()) for image in train}
    # Fashion-MNIST has a few exact duplicates; a held-out split shares almost none with training.
    assert sum(bytes(image.numpy().tobytes()) in seen for image in validation) <= len(validation) // 100


def test_rerunning_one_labelling_node_pays_nothing(in_project):
    before = ledger_paid(in_project)
    run_kedro(in_project, node_names=["ideal.round_002.label_with_teacher"])
    receipt = read_json(in_project, f"{DATA}/05_model_input/ideal/round_002/labelling_receipt.json")
    assert receipt["queries_paid_now"] == 0 and receipt["labels_reused_from_ledger"] == receipt["samples"]
    assert ledger_paid(in_project) == before


def test_rerunning_from_a_generator_reproduces_the_same_images(in_project):
    path = in_project / f"{DATA}/05_model_input/ideal/round_002/synthetic_images.safetensors"
    before, paid = load_file(path)["tensor"], ledger_paid(in_project)
    run_kedro(in_project, from_nodes=["ideal.round_002.train_generator"], pipeline_names=["ideal"])
    assert torch.equal(load_file(path)["tensor"], before)
    assert ledger_paid(in_project) == paid


def test_one_round_reruns_alone_by_its_namespace(in_project):
    student = in_project / f"{DATA}/06_models/ideal/round_002/student.safetensors"
    before, paid = load_file(student), ledger_paid(in_project)
    run_kedro(in_project, namespaces=["ideal.round_002"], pipeline_names=["ideal"])
    after = load_file(student)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert ledger_paid(in_project) == paid


def test_more_rounds_from_the_command_line_reuse_paid_labels(in_project):
    paid = ledger_paid(in_project)
    run_kedro(in_project, pipeline_names=["ideal"], runtime_params={"ideal": {"rounds": 3}})
    per_round = read_json(in_project, f"{DATA}/05_model_input/ideal/round_003/labelling_receipt.json")["samples"]
    assert read_json(in_project, f"{DATA}/06_models/ideal/round_003/pool_summary.json")["queries_used"] == 3 * per_round
    assert ledger_paid(in_project) == paid + per_round


def test_a_plan_over_budget_fails_before_any_work(in_project):
    paid = ledger_paid(in_project)
    with pytest.raises(ParameterError, match="max_queries=10"):
        run_kedro(
            in_project, pipeline_names=["ideal"], runtime_params={"ideal": {"teacher_access": {"max_queries": 10}}}
        )
    assert ledger_paid(in_project) == paid


def test_a_baseline_runs_through_the_same_rounds_with_its_own_ledger(in_project):
    ideal_paid = ledger_paid(in_project)
    run_kedro(in_project, pipeline_names=["baselines"], runtime_params={"baselines": {"methods": ["uniform_noise"]}})
    params = ideal_params(in_project)
    planned = params["rounds"] * params["batch_size"] * 2
    assert ledger_paid(in_project, "uniform_noise") == planned  # exactly its own queries
    assert ledger_paid(in_project) == ideal_paid  # IDEAL's ledger untouched
    metrics = read_json(in_project, f"{DATA}/08_reporting/baselines_metrics.json")
    assert list(metrics) == ["uniform_noise"] and metrics["uniform_noise"]["queries_used"] == planned
    folder = in_project / f"{DATA}/07_model_output/baselines/uniform_noise/round_001"
    noise = load_file(folder / "synthetic_images.safetensors")["tensor"]
    ideal_images = load_file(in_project / f"{DATA}/05_model_input/ideal/round_001/synthetic_images.safetensors")[
        "tensor"
    ]
    assert noise.shape == ideal_images.shape and not torch.equal(noise, ideal_images)
    assert read_json(in_project, f"{DATA}/07_model_output/baselines/index.json") == {"methods": ["uniform_noise"]}


def test_a_second_full_run_succeeds_and_pays_nothing(in_project):
    """The victim is trained and saved again: the same weights are the same teacher."""
    paid = ledger_paid(in_project)
    run_kedro(in_project)
    rounds = ideal_params(in_project)["rounds"]
    for r in range(1, rounds + 1):
        assert (
            read_json(in_project, f"{DATA}/05_model_input/ideal/round_{r:03d}/labelling_receipt.json")[
                "queries_paid_now"
            ]
            == 0
        )
    assert ledger_paid(in_project) == paid


def test_a_changed_run_that_fits_its_budget_never_stops_midway(ran_project, tmp_path, monkeypatch, label_store):
    """Another generator gives other images: the run gets a budget of its own and pays all of them."""
    project = tmp_path / "project"
    shutil.copytree(ran_project, project)
    monkeypatch.chdir(project)
    params = ideal_params(project)
    planned = params["rounds"] * params["batch_size"] * 2
    changed = {"generator": {"nz": 17}, "teacher_access": {"max_queries": planned + 50}}
    run_kedro(project, pipeline_names=["ideal"], runtime_params={"ideal": changed})
    # The store merged the first run's chunks (from data/03_primary): those labels came free.
    assert paid_queries(label_store, "ideal/") == planned


def test_a_plan_far_over_any_graph_is_refused_before_the_graph_is_built(in_project):
    started = time.perf_counter()
    with pytest.raises(ParameterError, match="ideal.rounds"):
        run_kedro(in_project, pipeline_names=["ideal"], runtime_params={"ideal": {"rounds": 2000}})
    assert time.perf_counter() - started < 10


def test_a_second_run_in_the_same_data_folder_stops_with_the_first_ones_name(in_project):
    lock = RunLock(in_project / DATA / ".run.lock")
    lock.acquire()  # another run holds the folder
    try:
        with pytest.raises(RunLocked, match=rf"another run is using .*{DATA}: pid {os.getpid()}"):
            run_kedro(in_project, pipeline_names=["ideal"])
    finally:
        lock.release()
    run_kedro(in_project, node_names=["ideal.round_001.label_with_teacher"])  # released: runs again
