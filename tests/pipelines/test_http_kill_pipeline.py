"""`kedro run --pipelines ideal` against `ideal-teacher serve`, SIGKILLed mid-labelling and rerun:
the teacher bills exactly one query per synthetic sample."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from ideal_pipeline.teacher.ledger import QueryLedger
from ideal_pipeline.teacher.server import client_id
from tests.conftest import free_port, server_up, wait_for

pytestmark = pytest.mark.timeout(240)
TOKEN, ADMIN = "pipeline-kill-token", "pipeline-kill-admin"


def test_killed_kedro_run_resumes_and_pays_each_sample_once(ran_project, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ran_project, project)
    ledger_path = project / "data/03_primary/teacher_query_ledger.sqlite"
    ledger_path.unlink()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    params_file = project / "conf/test/parameters_ideal.yml"
    params = yaml.safe_load(params_file.read_text())
    params["ideal"]["teacher_access"].update(kind="http", url=url + "/labels", timeout_s=5, backoff_s=0.05)
    params_file.write_text(yaml.safe_dump(params))

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "IDEAL_TEACHER_TOKEN": TOKEN, "IDEAL_TEACHER_ADMIN_TOKEN": ADMIN, "KEDRO_DISABLE_TELEMETRY": "1"}
    serve = [str(bin_dir / "ideal-teacher"), "serve", "--model", str(project / "data/06_models/victim/victim_teacher.pt2")]
    serve += ["--port", str(port), "--input-shape", "1,28,28", "--fault-slow", "1", "--fault-slow-s", "0.3"]
    run = [str(bin_dir / "kedro"), "run", "--env", "test", "--pipelines", "ideal"]
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(serve, env=env, stdout=log, stderr=log)
        try:
            wait_for(lambda: server_up(url), 30, "the teacher server")
            first = subprocess.Popen(run, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for(lambda: ledger_path.exists() and QueryLedger(ledger_path).paid_queries() >= 15, 120, "paid labels")
            finally:
                first.send_signal(signal.SIGKILL)
                first.wait(10)
            assert QueryLedger(ledger_path).paid_queries() < 80, "the kill must land before the run is done"
            second = subprocess.run(run, cwd=project, env=env, capture_output=True, text=True, timeout=180)
            assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
            billing = httpx.get(url + "/billing", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        finally:
            server.terminate()
            server.wait(10)

    summary = json.loads((project / "data/06_models/ideal/pool_summary_002.json").read_text())
    assert summary["queries_used"] == 80
    assert billing[client_id(TOKEN)]["billed_samples"] == 80 == QueryLedger(ledger_path).paid_queries()
