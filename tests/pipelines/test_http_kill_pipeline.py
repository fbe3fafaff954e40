"""`kedro run --pipelines ideal` against `ideal-teacher serve`, SIGKILLed mid-request and rerun:
the teacher bills exactly one query per synthetic sample, and the request in flight at the kill
is answered again from the server's idempotency cache (asserted, not assumed)."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ideal_pipeline.teacher.server import client_id
from tests.conftest import DATA, billing_of, free_port, paid_queries, server_up, wait_for

pytestmark = pytest.mark.timeout(240)
TOKEN, ADMIN = "pipeline-kill-token", "pipeline-kill-admin"


def test_killed_kedro_run_resumes_and_pays_each_sample_once(ran_project, tmp_path, label_store):
    project = tmp_path / "project"
    shutil.copytree(ran_project, project)
    shutil.rmtree(project / f"{DATA}/03_primary/ideal/paid_labels")  # nothing paid yet
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    params_file = project / "conf/test/parameters_ideal.yml"
    params = yaml.safe_load(params_file.read_text())
    params["ideal"]["teacher_access"].update(kind="http", url=url + "/labels", timeout_s=5, backoff_s=0.05)
    params_file.write_text(yaml.safe_dump(params))

    teacher_file = project / DATA / "06_models/victim/victim_teacher.safetensors"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "IDEAL_TEACHER_TOKEN": TOKEN, "IDEAL_TEACHER_ADMIN_TOKEN": ADMIN}
    env["KEDRO_DISABLE_TELEMETRY"] = "1"
    serve = [str(bin_dir / "ideal-teacher"), "serve", "--model", str(teacher_file), "--trust-model-file"]
    serve += ["--port", str(port), "--input-shape", "1,28,28", "--state-db", str(tmp_path / "server-state.sqlite")]
    serve += ["--fault-slow", "1", "--fault-slow-s", "1"]  # every answer is held back 1 s after it is billed
    run = [str(bin_dir / "kedro"), "run", "--env", "test", "--pipelines", "ideal"]
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(serve, env=env, stdout=log, stderr=log)
        try:
            wait_for(lambda: server_up(url), 90, "the teacher server")
            first = subprocess.Popen(run, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def billed() -> int:
                return billing_of(url, ADMIN, client_id(TOKEN)).get("billed_samples", 0)

            try:
                # Kill within the 1 s between billing a chunk and answering it: the rerun must replay it.
                wait_for(lambda: billed() >= 15 or first.poll() is not None, 120, "a billed chunk")
            finally:
                first.send_signal(signal.SIGKILL)
                first.wait(10)
            billed_at_kill = billed()
            assert paid_queries(label_store) < billed_at_kill < 80, "the kill must land mid-request"
            second = subprocess.run(run, cwd=project, env=env, capture_output=True, text=True, timeout=180, check=False)
            assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
            billing = billing_of(url, ADMIN, client_id(TOKEN))
        finally:
            server.terminate()
            server.wait(10)

    summary = json.loads((project / f"{DATA}/06_models/ideal/round_002/pool_summary.json").read_text())
    assert summary["queries_used"] == 80
    assert billing["billed_samples"] == 80 == paid_queries(label_store)
    assert billing["replayed_requests"] >= 1  # the chunk in flight at the kill came from the idempotency cache
