"""Tokens: stripped and checked when read, never echoed, a malformed one never retried."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ideal_pipeline
from ideal_pipeline.teacher.server import cli, create_app
from ideal_pipeline.teacher.server.testing import serve_in_thread
from ideal_pipeline.teacher.tokens import TokenError, read_tokens
from tests.conftest import http_teacher

pytestmark = pytest.mark.timeout(120)
TOKEN = "tok-5ecret-value-for-tests"


def _leaks(text: str, token: str) -> bool:
    """Whether `text` holds the token or any 6-character piece of it."""
    return any(token[i : i + 6] in text for i in range(len(token) - 5))


def test_client_strips_a_trailing_newline_and_never_logs_the_token(model_file, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("IDEAL_TEACHER_TOKEN", TOKEN + "\r\n")
    app = create_app(model_file, [TOKEN], input_shape=(1, 28, 28), trust_model_file=True)
    with serve_in_thread(app) as url:
        teacher = http_teacher(url + "/labels", timeout_s=5, max_retries=2, backoff_s=0.01)
        labels = teacher.label(torch.rand(3, 1, 28, 28))
    assert labels.shape == (3,) and teacher.requests_sent == 1
    assert not _leaks(caplog.text, TOKEN)


@pytest.mark.parametrize("bad", ["\r", "\n", " ", "\x07", "é"])
def test_client_refuses_a_malformed_token_at_once_naming_the_variable_only(model_file, monkeypatch, caplog, bad):
    caplog.set_level(logging.DEBUG)
    malformed = TOKEN[:12] + bad + TOKEN[12:]
    monkeypatch.setenv("IDEAL_TEACHER_TOKEN", malformed)
    with pytest.raises(TokenError) as at_start:
        http_teacher("http://127.0.0.1:9/labels")
    # Set right at construction, spoiled before a request: refused before sending, not retried.
    monkeypatch.setenv("IDEAL_TEACHER_TOKEN", TOKEN)
    app = create_app(model_file, [TOKEN], input_shape=(1, 28, 28), trust_model_file=True)
    with serve_in_thread(app) as url:
        teacher = http_teacher(url + "/labels", timeout_s=5, max_retries=5, backoff_s=0.01)
        monkeypatch.setenv("IDEAL_TEACHER_TOKEN", malformed)
        with pytest.raises(TokenError) as at_request:
            teacher.label(torch.rand(3, 1, 28, 28))
    for error in (at_start.value, at_request.value):
        assert "IDEAL_TEACHER_TOKEN" in str(error) and "HTTP header" in str(error)
        assert not _leaks(str(error) + repr(error.__cause__) + repr(error.__context__), TOKEN)
    assert teacher.requests_sent == 0 and sum(app.state.service.status_counts.values()) == 0
    assert not _leaks(caplog.text, TOKEN) and "retry" not in caplog.text


def test_server_token_variables_are_stripped_and_checked(monkeypatch):
    monkeypatch.setenv("IDEAL_TEACHER_TOKEN", f" {TOKEN}\r\n, other-token\n,")
    assert read_tokens("IDEAL_TEACHER_TOKEN") == [TOKEN, "other-token"]
    monkeypatch.setenv("IDEAL_TEACHER_TOKEN", f"other-token,{TOKEN[:8]}\r{TOKEN[8:]}")
    with pytest.raises(TokenError) as error:
        read_tokens("IDEAL_TEACHER_TOKEN")
    assert "entry 2 of 2" in str(error.value) and "IDEAL_TEACHER_TOKEN" in str(error.value)
    assert not _leaks(str(error.value), TOKEN) and "other-token" not in str(error.value)
    monkeypatch.delenv("IDEAL_TEACHER_ADMIN_TOKEN", raising=False)
    assert read_tokens("IDEAL_TEACHER_ADMIN_TOKEN", required=False) == []


def test_server_refuses_to_start_with_a_malformed_token(model_file, tmp_path):
    """The real command: exit status 1, one line naming the variable, nothing of the token."""
    src = str(Path(ideal_pipeline.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src, "IDEAL_TEACHER_TOKEN": f"{TOKEN[:8]}\n{TOKEN[8:]}"}
    command = [sys.executable, "-m", "ideal_pipeline.teacher.server.cli", "serve", "--model", str(model_file)]
    command += ["--input-shape", "1,28,28", "--trust-model-file", "--state-db", str(tmp_path / "state.sqlite")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 1
    assert "IDEAL_TEACHER_TOKEN" in done.stderr and "line feed" in done.stderr and "Traceback" not in done.stderr
    assert not _leaks(done.stdout + done.stderr, TOKEN)


def test_cli_reads_the_admin_variable_the_same_way(model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("IDEAL_TEACHER_TOKEN", TOKEN)
    monkeypatch.setenv("IDEAL_TEACHER_ADMIN_TOKEN", "admin with a space")
    args = cli._parser().parse_args(
        ["serve", "--model", str(model_file), "--input-shape", "1,28,28", "--trust-model-file"]
        + ["--state-db", str(tmp_path / "state.sqlite")]
    )
    with pytest.raises(SystemExit) as error:
        cli._app(args)
    assert "IDEAL_TEACHER_ADMIN_TOKEN" in str(error.value.code) and "a space" in str(error.value.code)
    assert "admin with" not in str(error.value.code)
