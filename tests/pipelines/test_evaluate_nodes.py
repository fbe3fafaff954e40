"""Scoring the round-by-round students."""

import torch

from ideal_pipeline.models.students import build_student, state_to_tensors
from ideal_pipeline.rounds.scoring import score_students
from tests.conftest import settings

API = {"input_shape": [1, 28, 28], "num_classes": 10}
COMPUTE = settings("compute", device="cpu", num_threads=0, precision="fp32")


def test_every_kth_round_and_always_the_last_five_are_scored():
    torch.manual_seed(0)
    rounds = 12
    state = state_to_tensors(build_student("lenet", API))
    summary = {r: {"queries_used": 10 * r, "class_counts": [r] * 10} for r in range(1, rounds + 1)}
    students = {f"round_{r:03d}": (lambda: state) for r in range(1, rounds + 1)}
    summaries = {f"round_{r:03d}": (lambda r=r: summary[r]) for r in range(1, rounds + 1)}
    real = {"images": torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8), "labels": torch.randint(0, 10, (20,))}
    args = (
        students,
        summaries,
        {"round": rounds},
        real,
        real,
        real["labels"],
        API,
        settings("ideal.student", architecture="lenet"),
        COMPUTE,
    )
    curve = score_students(*args, score_every=5)
    assert curve["round"].tolist() == [5, 8, 9, 10, 11, 12]
    assert curve["queries_used"].tolist() == [50, 80, 90, 100, 110, 120]
    assert score_students(*args, score_every=1)["round"].tolist() == list(range(1, 13))
