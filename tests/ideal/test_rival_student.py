"""The DisGUIDE lever: a rival student distilled beside the student, and a generator paid for the
images the two disagree on (`student.rival`, `generator.disagreement_weight`)."""

import pytest
import torch
from torch import nn

from ideal_pipeline.compute import CPU
from ideal_pipeline.ideal.generation import generate_images, train_generator
from ideal_pipeline.ideal.losses import disagreement
from ideal_pipeline.ideal.selection import choose_images
from ideal_pipeline.models.students import RIVAL_PREFIX, load_student, split_rival
from ideal_pipeline.parameter_schema import ParameterError, validate_parameters
from ideal_pipeline.pipelines.ideal import nodes as ideal_nodes
from ideal_pipeline.rounds.nodes import distill_student, initialize_student
from tests.conftest import plain_distill, settings
from tests.ideal.test_accuracy_levers import EmptyPool, pool
from tests.test_parameter_schema import changed, load_parameters

CARD = {"input_shape": [1, 28, 28], "num_classes": 10}
PLAN = {"method": "ideal", "budget_scope": "ideal/seed=0/run=test/", "planned_queries": 40}


def test_disagreement_is_zero_between_equal_predictions_and_one_between_sure_different_ones():
    logits = torch.tensor([[3.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    assert disagreement(logits, logits.clone()).item() == pytest.approx(0.0)
    sure = torch.tensor([[50.0, 0.0, 0.0]])
    assert disagreement(sure, torch.tensor([[0.0, 50.0, 0.0]])).item() == pytest.approx(1.0)


def linear_student(seed: int) -> nn.Module:
    """A student whose answers depend on every pixel, neither sure nor uniform on 8x8 images."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.mul_(2)
    return model.eval()


def test_a_generator_paid_for_disagreement_makes_images_the_two_students_disagree_on_more():
    student, rival = linear_student(0), linear_student(1)
    targets = torch.arange(10).repeat(3)
    spread = {}
    for weight in (0.0, 20.0):
        generator = settings("ideal.generator", nz=8, ngf=8, g_steps=20, lr=0.01, channels_last=False)
        generator = generator.model_copy(update={"disagreement_weight": weight})
        result = train_generator(student, targets, generator, 8, 1, seed=0, compute=CPU, rival=rival)
        images = generate_images(result.state_dict, result.noise, generator, 8, 1, CPU)
        with torch.no_grad():
            spread[weight] = disagreement(student(images), rival(images)).item()
    assert spread[20.0] > spread[0.0] + 0.2  # measured: 0.19 without the term, 0.64 with it


class ByImage(nn.Module):
    """Logits looked up by the image's index, which is its pixel value."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x):
        return self.logits[(x.flatten(1)[:, 0] * 255).round().long()]


def test_with_a_rival_the_images_the_two_students_disagree_on_count_as_unsure():
    images = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    student = ByImage([[4.0, 0.0], [5.0, 0.0], [5.0, 0.0], [5.0, 0.0]])  # least sure of image 0
    rival = ByImage([[4.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])  # disagrees on image 2
    assert choose_images(student, images, 1, CPU).tolist() == [0]
    assert choose_images(student, images, 1, CPU, rival=rival).tolist() == [2]


def test_the_rival_starts_elsewhere_learns_from_the_same_labels_and_stays_out_of_the_student():
    on, off = settings("ideal.student", rival=True), settings("ideal.student", rival=False)
    start, summary = initialize_student(PLAN, CARD, on, seed=0)
    alone, _ = initialize_student(PLAN, CARD, off, seed=0)
    own, rival = split_rival(start)
    assert own.keys() == alone.keys() == rival.keys()
    assert all(torch.equal(own[k], alone[k]) for k in own)  # the student is the one it would be without a rival
    assert not torch.equal(rival["classifier.weight"], own["classifier.weight"])
    images, labels = pool(40)
    state, _ = distill_student(
        start, summary, EmptyPool(), images, labels, {}, CARD, plain_distill(batch_size=10), on,
        rounds=1, seed=0, compute=settings("compute"),
    )  # fmt: skip
    without, _ = distill_student(
        alone, summary, EmptyPool(), images, labels, {}, CARD, plain_distill(batch_size=10), off,
        rounds=1, seed=0, compute=settings("compute"),
    )  # fmt: skip
    trained_own, trained_rival = split_rival(state)
    assert all(torch.equal(trained_own[k], without[k]) for k in without)  # the rival changes nothing of the student
    assert not torch.equal(trained_rival["classifier.weight"], rival["classifier.weight"])  # it learned too
    weight = "classifier.weight"
    assert torch.equal(load_student("lenet", CARD, state).state_dict()[weight], trained_own[weight])
    assert {k for k in state if k.startswith(RIVAL_PREFIX)} == {RIVAL_PREFIX + k for k in trained_own}


def test_disagreement_without_a_rival_is_refused_by_name():
    with pytest.raises(ParameterError, match="student.rival"):
        validate_parameters(changed(load_parameters(), "ideal.generator.disagreement_weight", 1.0))
    with_rival = changed(load_parameters(), "ideal.student.rival", True)
    validate_parameters(changed(with_rival, "ideal.generator.disagreement_weight", 1.0))
    start, summary = initialize_student(PLAN, CARD, settings("ideal.student"), seed=0)
    generator = settings("ideal.generator", disagreement_weight=1.0, nz=8, ngf=4, g_steps=1, channels_last=False)
    with pytest.raises(ValueError, match="rival"):
        ideal_nodes.train_generator(
            start, summary, CARD, generator, settings("ideal.student"), 10, 0, settings("compute")
        )
    images, labels = pool(20)
    with pytest.raises(ValueError, match="no rival"):
        distill_student(
            start, summary, EmptyPool(), images, labels, {}, CARD, plain_distill(batch_size=10),
            settings("ideal.student", rival=True), rounds=1, seed=0, compute=settings("compute"),
        )  # fmt: skip
