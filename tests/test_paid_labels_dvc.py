"""No DVC or git workflow pays for a label twice: a scratch repository whose one stage buys labels
through the real label store, with the project's output settings, run through every workflow the
docs name against a teacher that writes down every image it is sent (outside the repository)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ideal_pipeline.dvc_stages import build_stages
from tests.conftest import REPO, STORE_ENV

pytestmark = pytest.mark.timeout(600)
BIN = Path(sys.executable).parent

LABEL_SCRIPT = """
import os, sys
import torch, yaml
from ideal_pipeline.teacher.blackbox import AccountedTeacher, image_key
from ideal_pipeline.teacher.label_store import LabelStore

class CountingTeacher:
    fingerprint = "scratch:teacher"

    def label(self, images):
        stored = (images * 255).round().to(torch.uint8)
        with open(os.environ["BILL"], "a") as bill:
            bill.writelines(image_key(image) + "\\n" for image in stored)
        return stored.flatten(1).sum(1).long() % 10

seed = yaml.safe_load(open("params.yaml"))["seed"]
images = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
store = LabelStore(export_dir=sys.argv[1])
scope = f"scratch/seed={seed}/"
teacher = AccountedTeacher(
    CountingTeacher(), store.ledger("scratch:teacher"), max_queries=20, max_batch=8, budget_scope=scope
)
labels = teacher.label(images, tag=scope + "round=001")
store.export(teacher.fingerprint, images, labels)
os.makedirs("results", exist_ok=True)
open("results/labels.txt", "w").write(" ".join(map(str, labels.tolist())))
"""


def paid_labels_out() -> str | dict:
    """The project's own `outs` entry of IDEAL's paid labels folder, as dvc.yaml writes it."""
    outs = build_stages(REPO)["stages"]["ideal"]["outs"]
    entry = next(o for o in outs if (o if isinstance(o, str) else next(iter(o))) == "data/03_primary/ideal")
    return entry


def sh(cwd: Path, env: dict, *args: str) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout + done.stderr


@pytest.fixture
def scratch(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "BILL": str(tmp_path / "bill.txt"),
        STORE_ENV: str(tmp_path / "store-machine-a"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    out = paid_labels_out()
    folder = "data/03_primary/ideal"
    settings = out[folder] if isinstance(out, dict) else {}
    stage = {
        "cmd": f"python label.py {folder}/paid_labels",
        "deps": ["label.py"],
        "params": ["seed"],
        "outs": [{folder: settings} if settings else folder, "results"],
    }
    (repo / "label.py").write_text(LABEL_SCRIPT)
    (repo / "params.yaml").write_text("seed: 0\n")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"label": stage}}))
    (repo / ".gitignore").write_text("/dvc-remote/\n")
    sh(repo, env, "git", "init", "-q")
    sh(repo, env, str(BIN / "dvc"), "init", "-q")
    sh(repo, env, str(BIN / "dvc"), "remote", "add", "-d", "local", str(tmp_path / "dvc-remote"))
    sh(repo, env, "git", "add", "-A")
    sh(repo, env, "git", "commit", "-qm", "scratch")
    return repo, env, tmp_path


def bought_twice(bill: Path) -> dict[str, int]:
    counts = Counter(bill.read_text().split()) if bill.exists() else Counter()
    return {key: n for key, n in counts.items() if n > 1}


def test_no_dvc_or_git_workflow_buys_a_label_twice(scratch):
    repo, env, tmp_path = scratch
    bill = tmp_path / "bill.txt"
    dvc = str(BIN / "dvc")

    def billed() -> int:
        return len(bill.read_text().split()) if bill.exists() else 0

    sh(repo, env, dvc, "repro")
    assert billed() == 20
    sh(repo, env, "git", "add", "-A")
    sh(repo, env, "git", "commit", "-qm", "seed 0")
    sh(repo, env, dvc, "push")

    # A fresh clone on another machine (its own, empty label store): pull, then rerun the stage.
    clone = tmp_path / "clone"
    sh(tmp_path, env, "git", "clone", "-q", str(repo), str(clone))
    other_machine = {**env, STORE_ENV: str(tmp_path / "store-machine-b")}
    sh(clone, other_machine, dvc, "remote", "modify", "local", "url", str(tmp_path / "dvc-remote"))
    sh(clone, other_machine, dvc, "pull")
    sh(clone, other_machine, dvc, "repro")
    sh(clone, other_machine, dvc, "repro", "--force")
    assert billed() == 20

    # The data folder deleted, pulled back, rerun.
    sh(repo, env, "rm", "-rf", "data", "results")
    sh(repo, env, dvc, "pull")
    sh(repo, env, dvc, "repro", "--force")
    assert billed() == 20

    # Experiments in temporary folders, then queued, then applied and reproduced.
    sh(repo, env, dvc, "exp", "run", "--temp", "-S", "seed=1", "-n", "seed1")
    assert billed() == 40
    sh(repo, env, dvc, "exp", "run", "--temp", "-S", "seed=1", "-n", "seed1-again", "--force")
    sh(repo, env, dvc, "exp", "run", "--queue", "-S", "seed=1", "-n", "seed1-queued")
    sh(repo, env, dvc, "queue", "start", "-j", "1")
    sh(repo, env, dvc, "queue", "logs", "--follow", "seed1-queued")  # returns when it has finished
    sh(repo, env, dvc, "exp", "apply", "seed1")
    sh(repo, env, dvc, "repro", "--force")
    assert billed() == 40

    # Back to seed 0 with git and dvc checkout, a stash of everything, and reruns.
    sh(repo, env, "git", "checkout", "--", ".")
    sh(repo, env, dvc, "checkout", "--force")
    sh(repo, env, dvc, "repro", "--force")
    sh(repo, env, "git", "stash", "--all")
    sh(repo, env, "git", "stash", "pop")
    sh(repo, env, dvc, "repro", "--force")
    assert billed() == 40
    assert bought_twice(bill) == {}
