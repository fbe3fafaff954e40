"""The `victim` pipeline's training node is a function of its inputs and parameters alone."""

from pathlib import Path

import torch
import yaml

from ideal_pipeline.pipelines.victim.nodes import train_victim_teacher

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


def test_the_victim_teacher_does_not_depend_on_the_global_rng():
    params = yaml.safe_load((CONF / "parameters_victim.yml").read_text())["victim"]
    params.update(architecture="lenet", epochs=1, num_classes=10)
    torch.manual_seed(123)
    real_train = {"images": torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8), "labels": torch.arange(64) % 10}
    weights = []
    for unrelated_seed in (1, 2):
        torch.manual_seed(unrelated_seed)  # as if earlier nodes had drawn different random numbers
        torch.rand(100)
        (model, _), _ = train_victim_teacher(
            real_train, params, {"device": "cpu", "num_threads": 0, "precision": "fp32"}
        )
        weights.append(model.state_dict())
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
