"""The pipelines against a teacher the user names: a model file, or an HTTP endpoint with faults."""

import json
import shutil

import pytest

from ideal_pipeline.teacher.blackbox import TeacherInputError
from ideal_pipeline.teacher.ledger import QueryLedger
from ideal_pipeline.teacher.server import Faults, client_id, create_app, serve_in_thread
from tests.conftest import run_kedro

pytestmark = pytest.mark.timeout(300)
TOKEN = "token-for-the-pipeline-test"


@pytest.fixture
def fresh_copy(ran_project, tmp_path, monkeypatch):
    """A copy of the ran project with an empty ledger: nothing paid yet."""
    project = tmp_path / "project"
    shutil.copytree(ran_project, project)
    (project / "data/03_primary/teacher_query_ledger.sqlite").unlink()
    monkeypatch.chdir(project)
    return project


def test_ideal_over_http_with_faults_bills_exactly_one_query_per_sample(fresh_copy, monkeypatch):
    monkeypatch.setenv("IDEAL_TEACHER_TOKEN", TOKEN)
    faults = Faults(p_500=0.15, p_429=0.15, p_drop=0.15, seed=0)
    app = create_app(fresh_copy / "data/06_models/teacher/victim_teacher.pt2", [TOKEN], input_shape=(1, 28, 28), faults=faults, trust_model_file=True)
    with serve_in_thread(app) as url:
        access = {"kind": "http", "url": f"{url}/labels", "timeout_s": 5, "backoff_s": 0.01, "max_retries": 50}
        run_kedro(fresh_copy, pipeline_names=["ideal"], runtime_params={"ideal": {"teacher_access": access}})
    summary = json.loads((fresh_copy / "data/06_models/ideal/pool_summary_002.json").read_text())
    billed = app.state.service.billing[client_id(TOKEN)]["billed_samples"]
    assert billed == summary["queries_used"] == summary["pool_size"] > 0
    assert QueryLedger(fresh_copy / "data/03_primary/teacher_query_ledger.sqlite").paid_queries() == billed


def test_bring_your_own_model_file_teacher(fresh_copy):
    own = fresh_copy / "their_teacher.pt2"
    shutil.copy(fresh_copy / "data/06_models/teacher/victim_teacher.pt2", own)
    run_kedro(fresh_copy, pipeline_names=["byo"], runtime_params={"external_teacher": {"model_path": str(own)}})
    card = json.loads((fresh_copy / "data/06_models/teacher/teacher_api.json").read_text())
    metrics = json.loads((fresh_copy / "data/08_reporting/evaluate/metrics.json").read_text())
    test_size = json.loads((fresh_copy / "data/08_reporting/teacher/teacher_metrics.json").read_text())["test_samples"]
    assert card["model_path"] == str(own)
    assert QueryLedger(fresh_copy / "data/03_primary/evaluation_query_ledger.sqlite").paid_queries() == test_size
    assert QueryLedger(fresh_copy / "data/03_primary/teacher_query_ledger.sqlite").paid_queries() == metrics["queries_used"]


def test_a_teacher_of_another_shape_is_refused_before_any_query(fresh_copy):
    with pytest.raises(TeacherInputError, match=r"teacher takes \[3, 32, 32\]"):
        run_kedro(
            fresh_copy,
            pipeline_names=["byo"],
            runtime_params={"external_teacher": {"model_path": "x.pt2", "input_shape": [3, 32, 32]}},
        )
    assert not (fresh_copy / "data/03_primary/evaluation_query_ledger.sqlite").exists()
