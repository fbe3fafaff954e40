"""The whole default pipeline in the test environment, through a Kedro session."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import run_kedro

pytestmark = pytest.mark.timeout(300)


def ideal_params(project):
    base = yaml.safe_load((project / "conf/base/parameters_ideal.yml").read_text())["ideal"]
    test = yaml.safe_load((project / "conf/test/parameters_ideal.yml").read_text())["ideal"]
    return {**base, **test}


def read_json(project, path):
    return json.loads((project / path).read_text())


def ledger_paid(project):
    from ideal_pipeline.teacher.ledger import QueryLedger

    return QueryLedger(project / "data/03_primary/teacher_query_ledger.sqlite").paid_queries()


def test_queries_used_is_rounds_times_samples_per_round(ran_project):
    params = ideal_params(ran_project)
    per_round = params["batch_size"] * (2 if params["label_mirrors"] else 1)
    metrics = read_json(ran_project, "data/08_reporting/evaluate/metrics.json")
    assert metrics["queries_used"] == params["rounds"] * per_round
    assert ledger_paid(ran_project) == metrics["queries_used"]
    for key in ("student_accuracy", "teacher_accuracy", "agreement", "redistilled_student_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["teacher_accuracy"] > 0.5  # a real teacher, trained on real Fashion-MNIST


def test_each_round_labels_its_own_new_samples_exactly_once(ran_project):
    params = ideal_params(ran_project)
    seen = set()
    for r in range(1, params["rounds"] + 1):
        folder = ran_project / f"data/05_model_input/ideal/round_{r:03d}"
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


def test_reports_are_written(ran_project):
    report = ran_project / "data/08_reporting/evaluate"
    for name in ("accuracy_vs_queries.png", "synthetic_grid.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (report / "accuracy_vs_queries.csv").read_text().splitlines()
    assert rows[0].split(",") == ["round", "queries_used", "student_accuracy", "agreement"]
    assert len(rows) == 1 + ideal_params(ran_project)["rounds"]
    card = read_json(ran_project, "data/06_models/teacher/teacher_api.json")
    assert card["input_shape"] == [1, 28, 28] and card["num_classes"] == 10


def test_rerunning_one_labelling_node_pays_nothing(in_project):
    before = ledger_paid(in_project)
    run_kedro(in_project, node_names=["round_002.label_with_teacher"])
    receipt = read_json(in_project, "data/05_model_input/ideal/round_002/labelling_receipt.json")
    assert receipt["queries_paid_now"] == 0 and receipt["labels_reused_from_ledger"] == receipt["samples"]
    assert ledger_paid(in_project) == before


def test_rerunning_from_a_generator_reproduces_the_same_images(in_project):
    path = in_project / "data/05_model_input/ideal/round_002/synthetic_images.safetensors"
    before, paid = load_file(path)["tensor"], ledger_paid(in_project)
    run_kedro(in_project, from_nodes=["round_002.train_generator"], pipeline_names=["ideal"])
    assert torch.equal(load_file(path)["tensor"], before)
    assert ledger_paid(in_project) == paid


def test_more_rounds_from_the_command_line_reuse_paid_labels(in_project):
    paid = ledger_paid(in_project)
    run_kedro(in_project, pipeline_names=["ideal"], runtime_params={"ideal": {"rounds": 3}})
    per_round = read_json(in_project, "data/05_model_input/ideal/round_003/labelling_receipt.json")["samples"]
    assert read_json(in_project, "data/06_models/ideal/pool_summary_003.json")["queries_used"] == 3 * per_round
    assert ledger_paid(in_project) == paid + per_round


def test_a_plan_over_budget_fails_before_any_work(in_project):
    paid = ledger_paid(in_project)
    with pytest.raises(ValueError, match="max_queries is 10"):
        run_kedro(in_project, pipeline_names=["ideal"], runtime_params={"ideal": {"teacher_access": {"max_queries": 10}}})
    assert ledger_paid(in_project) == paid


def test_the_notebook_runs_on_the_pipelines_artifacts(in_project):
    """Executes the notebook's code cells in order, as Jupyter would."""
    import matplotlib

    matplotlib.use("Agg")
    notebook = json.loads((in_project / "notebooks/ideal_results.ipynb").read_text())
    namespace = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec("".join(cell["source"]), namespace)  # noqa: S102
    assert namespace["metrics"]["queries_used"] == namespace["curve"]["queries_used"].iloc[-1]
    assert len(namespace["images"]) == len(namespace["labels"]) > 0
    assert len(namespace["fig"].axes) == 8 * len(namespace["names"])
