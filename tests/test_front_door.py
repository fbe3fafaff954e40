"""What a new user meets first: the README's commands, one clear line for a mistake, a quick try that
leaves the tracked results alone, progress lines that do not wrap, partial runs that keep the records."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA, REPO, base_parameters, make_project_copy, run_kedro

pytestmark = pytest.mark.timeout(600)
BIN = Path(sys.executable).parent
README = (REPO / "README.md").read_text()


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    inline = re.findall(r"`(kedro run [^`]+)`", README)  # commands quoted in the text
    return [line for line in lines if line and not line.startswith(("#", "export "))] + inline


def merged(base: dict, overrides: dict) -> dict:
    """`overrides` (nested, or with dotted keys) written into `base`, as `kedro run --params` does."""
    for dotted, value in overrides.items():
        *path, key = dotted.split(".")
        section = base
        for name in path:
            section = section[name]
        section[key] = merged(section[key], value) if isinstance(value, dict) else value
    return base


def kedro(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run(
        [str(BIN / "kedro"), "run", *args],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )


def test_the_readme_is_a_page_and_starts_with_the_two_commands():
    assert len(README.splitlines()) <= 150
    assert readme_commands()[:2] == ["make run", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^run: setup$", makefile, re.MULTILINE) and re.search(r"^test: setup$", makefile, re.MULTILINE)
    assert "make test" in (REPO / ".ci/run").read_text()
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_every_kedro_command_of_the_readme_names_real_pipelines_nodes_and_parameters():
    from kedro.framework.cli.utils import _split_params

    from ideal_pipeline.parameter_schema import ParameterError, validate_parameters
    from ideal_pipeline.pipeline_registry import register_pipelines

    registered = register_pipelines()
    commands = [shlex.split(c) for c in readme_commands() if c.startswith("kedro run")]
    assert len(commands) >= 5
    for words in commands:
        options = dict(zip(words[2::2], words[3::2], strict=False))
        assert set(options) <= {"--env", "--pipelines", "--nodes", "--params"}, words
        if "--pipelines" in options:
            assert options["--pipelines"] in registered, words
        if "--nodes" in options:
            assert options["--nodes"] in {n.name for n in registered["__default__"].nodes}, words
        params = merged(base_parameters(), _split_params(None, None, options.get("--params", "")))
        if "ideal.roundz=3" in words:  # the README's example of a typo
            with pytest.raises(ParameterError, match="did you mean rounds"):
                validate_parameters(params)
        else:
            validate_parameters(params)  # raises with the reason


def test_a_typo_in_the_parameters_ends_in_a_few_clear_lines(tmp_path):
    project = make_project_copy(tmp_path / "project")
    done = kedro(project, "--env", "test", "--params", "ideal.roundz=3")
    output = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2 and len(output) <= 10, output
    assert any("ideal.roundz: unknown parameter; did you mean rounds?" in line for line in output)
    assert not any("Traceback" in line for line in output)


def test_a_quick_try_leaves_the_tracked_results_and_the_log_lines_whole(tmp_path):
    """A fresh clone, `kedro run --env test`, then git sees no change to any tracked file."""
    project = make_project_copy(tmp_path / "project")
    tracked = subprocess.run(["git", "ls-files", "data"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in tracked.stdout.split():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, project / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "clone"], cwd=project, check=True)
    done = kedro(project, "--env", "test")
    assert done.returncode == 0, done.stderr[-3000:]
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=project, capture_output=True, check=True
    )
    assert status.stdout == b""
    rounds = [line for line in done.stdout.splitlines() if "ideal round " in line]
    assert len(rounds) == 2 and all("queries" in line and ("left" in line or "done" in line) for line in rounds)
    assert "validation" in rounds[-1]  # the last round is scored on the validation split


def test_a_partial_run_updates_only_its_own_timing_records(ran_project, monkeypatch):
    monkeypatch.chdir(ran_project)
    timing = ran_project / DATA / "08_reporting/timing"
    whole, ideal = (json.loads((timing / name).read_text()) for name in ("kedro_run.json", "ideal.json"))
    run_kedro(ran_project, namespaces=["ideal.round_001"], pipeline_names=["ideal"])
    assert json.loads((timing / "kedro_run.json").read_text()) == whole  # the whole run's record is kept
    after = json.loads((timing / "ideal.json").read_text())
    assert set(after) == set(ideal)  # every step still counts both rounds, one of them measured again
