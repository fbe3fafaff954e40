"""The `victim` pipeline's training node is a function of its inputs and parameters alone."""

import torch

from ideal_pipeline.pipelines.victim.nodes import train_victim_teacher
from tests.conftest import settings


def test_the_victim_teacher_does_not_depend_on_the_global_rng():
    params = settings("victim", architecture="lenet", epochs=1, num_classes=10)
    torch.manual_seed(123)
    real_train = {"images": torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8), "labels": torch.arange(64) % 10}
    weights = []
    for unrelated_seed in (1, 2):
        torch.manual_seed(unrelated_seed)  # as if earlier nodes had drawn different random numbers
        torch.rand(100)
        compute = settings("compute", device="cpu", num_threads=0, precision="fp32")
        (model, _), _ = train_victim_teacher(real_train, params, compute)
        weights.append(model.state_dict())
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


def test_the_published_class_names_come_from_the_data_source():
    from ideal_pipeline.models.classifiers import LeNet
    from ideal_pipeline.pipelines.data.nodes import real_class_names
    from ideal_pipeline.pipelines.victim.nodes import publish_teacher_api

    digits = real_class_names(settings("data", source="sklearn_digits"))
    real_test = {"images": torch.zeros(2, 1, 8, 8, dtype=torch.uint8)}
    card = publish_teacher_api(LeNet(1, 10, 8), real_test, settings("victim"), settings("victim_api"), digits)
    assert card["class_names"] == [str(d) for d in range(10)]
    named = publish_teacher_api(
        LeNet(1, 10, 8), real_test, settings("victim", class_names=list("abcdefghij")), settings("victim_api"), digits
    )
    assert named["class_names"] == list("abcdefghij")
    assert real_class_names(settings("data"))["class_names"][0] == "T-shirt/top"
