"""A labelling process SIGKILLed mid-request and restarted pays each sample exactly once.

Both sides are real processes: the server is `ideal-teacher serve` (the CLI, a .pt2 model,
every answer held back 1 s after it is billed), the client a small script using
AccountedTeacher + HttpTeacher. The client is killed as soon as the server has billed an
answer it has not yet sent, so the restarted client must resend that request and the server
must replay it: the test asserts that the replay happened, not only that the totals add up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ideal_pipeline
from ideal_pipeline.models.classifiers import LeNet
from ideal_pipeline.models.files import load_model_file
from ideal_pipeline.teacher.blackbox import image_key
from ideal_pipeline.teacher.ledger import QueryLedger
from ideal_pipeline.teacher.server import client_id
from tests.conftest import billing_of, free_port, server_up, wait_for

TOKEN, ADMIN = "kill-test-token", "kill-test-admin"
CLIENT = """
import json, sys, numpy as np, torch
from ideal_pipeline.teacher.blackbox import AccountedTeacher
from ideal_pipeline.teacher.http_client import HttpTeacher
from ideal_pipeline.teacher.ledger import QueryLedger
url, images, ledger = sys.argv[1:4]
options = {"max_batch": 20, "timeout_s": 5, "max_retries": 3, "backoff_s": 0.05, "max_backoff_s": 30}
accounted = AccountedTeacher(HttpTeacher(url, "IDEAL_TEACHER_TOKEN", **options), QueryLedger(ledger), 10_000, max_batch=20)
labels = accounted.label(torch.from_numpy(np.load(images)))
print(json.dumps(labels.tolist()))
"""


@pytest.mark.timeout(240)
def test_killed_client_resumes_without_paying_twice(tmp_path):
    torch.manual_seed(0)
    model = tmp_path / "lenet.pt2"
    # Batch size must stay dynamic in the exported program: the server takes any batch up to max_batch.
    exported = torch.export.export(
        LeNet().eval(),
        (torch.rand(2, 1, 28, 28),),
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
    )
    torch.export.save(exported, str(model))
    images = torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    np.save(tmp_path / "images.npy", images.numpy())
    (tmp_path / "client.py").write_text(CLIENT)

    src = str(Path(ideal_pipeline.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src, "IDEAL_TEACHER_TOKEN": TOKEN, "IDEAL_TEACHER_ADMIN_TOKEN": ADMIN}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "ideal_pipeline.teacher.server.cli", "serve", "--model", str(model)]
    serve += ["--port", str(port)]
    serve += ["--input-shape", "1,28,28", "--max-batch", "50", "--fault-slow", "1", "--fault-slow-s", "1"]
    serve += ["--trust-model-file", "--state-db", str(tmp_path / "server-state.sqlite")]
    client = [
        sys.executable,
        str(tmp_path / "client.py"),
        url + "/labels",
        str(tmp_path / "images.npy"),
        str(tmp_path / "ledger.sqlite"),
    ]
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(serve, env=env, stderr=log, stdout=log)
        try:
            wait_for(lambda: server_up(url), 90, "the teacher server")
            first = subprocess.Popen(client, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

            def billed() -> int:
                return billing_of(url, ADMIN, client_id(TOKEN)).get("billed_samples", 0)

            try:
                # Billed answers wait 1 s before they are sent: killing within that window leaves the client
                # without an answer the server has billed.
                wait_for(lambda: billed() >= 40 or first.poll() is not None, 90, "the second billed request")
            finally:
                first.send_signal(signal.SIGKILL)
                _, first_stderr = first.communicate(timeout=10)
            ledger = QueryLedger(tmp_path / "ledger.sqlite")
            billed_at_kill = billed()
            mid_request = ledger.paid_queries() < billed_at_kill < 100
            assert mid_request, f"the kill must land between billing and answering: {first_stderr[-2000:]!r}"
            second = subprocess.run(client, check=False, env=env, capture_output=True, text=True, timeout=120)
            assert second.returncode == 0, second.stderr[-2000:]
            billing = billing_of(url, ADMIN, client_id(TOKEN))
        finally:
            server.terminate()
            server.wait(10)

    with torch.inference_mode():
        expected = load_model_file(model, trusted=True)(images.float() / 255).argmax(1).tolist()
    assert json.loads(second.stdout) == expected
    paid = ledger.lookup([image_key(image) for image in images])
    assert ledger.paid_queries() == 100 == billing["billed_samples"]
    assert billing["replayed_requests"] >= 1  # the request in flight at the kill was answered from the cache
    assert [paid[image_key(image)] for image in images] == expected
    lines = (tmp_path / "server.log").read_text().splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)  # structured logs
    assert TOKEN not in "\n".join(lines) and ADMIN not in "\n".join(lines)
