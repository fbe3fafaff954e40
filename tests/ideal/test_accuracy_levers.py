"""Accuracy levers: early stop by hit rate, momentum kept across rounds, logit adjustment,
the learning rate falling over the rounds, a moving average of the student's weights, consistency on
unlabelled views of the paid images, a victim family without BatchNorm."""

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from ideal_pipeline.compute import CPU
from ideal_pipeline.ideal.distillation import distill, round_learning_rate
from ideal_pipeline.ideal.generation import train_generator
from ideal_pipeline.models.classifiers import LeNet, build_classifier
from ideal_pipeline.models.images import apply_crop_flip, draw_crop_flip, to_float
from ideal_pipeline.models.students import AVERAGE_PREFIX, load_student, state_to_tensors
from ideal_pipeline.models.training import consistency
from ideal_pipeline.rounds.nodes import distill_student
from tests.conftest import plain_distill, settings


class AlwaysClassZero(nn.Module):
    """A student that answers class 0 for anything (its logits still depend on the input)."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([10.0] + [0.0] * 9))

    def forward(self, x):
        return self.bias + 0.0 * x.mean(dim=(1, 2, 3), keepdim=False)[:, None]


def test_the_generator_stops_once_the_student_gives_its_targets():
    targets = torch.zeros(10, dtype=torch.int64)
    generator = settings("ideal.generator", nz=8, ngf=4, g_steps=6, channels_last=False)
    full = train_generator(AlwaysClassZero(), targets, generator, 8, 1, seed=0, compute=CPU)
    generator = settings("ideal.generator", nz=8, ngf=4, g_steps=6, channels_last=False, stop_at_hit_rate=0.9)
    early = train_generator(AlwaysClassZero(), targets, generator, 8, 1, seed=0, compute=CPU)
    assert len(full.losses) == 6 and len(early.losses) == 1  # every target hit at the first step


def pool(n=60, seed=0):
    rng = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=rng), torch.randint(
        0, 10, (n,), generator=rng
    )


def test_momentum_is_carried_from_one_call_to_the_next():
    images, labels = pool()
    plain = plain_distill(batch_size=20)
    torch.manual_seed(0)
    continued, restarted = LeNet(), LeNet()
    restarted.load_state_dict(continued.state_dict())
    momentum = {}
    distill(continued, images, labels, plain, seed=1, compute=CPU, momentum=momentum)
    distill(restarted, images, labels, plain, seed=1, compute=CPU)
    assert set(momentum) == {name for name, _ in continued.named_parameters()}
    assert all(torch.equal(a, b) for a, b in zip(continued.state_dict().values(), restarted.state_dict().values()))
    first = {k: v.clone() for k, v in momentum.items()}
    distill(continued, images, labels, plain, seed=2, compute=CPU, momentum=momentum)
    distill(restarted, images, labels, plain, seed=2, compute=CPU)  # a fresh optimiser: no momentum at first
    assert not torch.equal(continued.classifier.weight, restarted.classifier.weight)
    assert not torch.equal(momentum["classifier.weight"], first["classifier.weight"])


def test_logit_adjustment_leaves_the_rare_class_less_penalised_in_the_plain_logits():
    images, _ = pool(200)
    labels = torch.tensor([0] * 180 + [1] * 20)  # the images tell nothing: only the class prior can be learned
    lean = {}
    for tau in (0.0, 1.0):
        torch.manual_seed(0)
        student = LeNet()
        distill(student, images, labels, plain_distill(batch_size=50, epochs=3, logit_adjustment=tau), 0, CPU)
        bias = student.classifier.bias.detach()
        lean[tau] = (bias[0] - bias[1]).item()  # how much the plain logits lean to the frequent class
    assert lean[1.0] < lean[0.0]


def test_the_learning_rate_falls_on_a_half_cosine_from_lr_to_its_final_fraction():
    falling = plain_distill(lr=0.01, final_lr_fraction=0.1)
    rates = [round_learning_rate(falling, r, 20) for r in range(1, 21)]
    assert rates[0] == 0.01 and abs(rates[-1] - 0.001) < 1e-12
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert abs(rates[len(rates) // 2] - 0.0055) < 0.0008  # about half way at mid-run
    assert {round_learning_rate(plain_distill(lr=0.01), r, 20) for r in range(1, 21)} == {0.01}
    assert round_learning_rate(falling, 1, 1) == 0.001  # a one-round run is its own last round


def test_the_tanh_victim_has_no_batchnorm_and_takes_every_image_size():
    for size in (8, 28, 32):
        model = build_classifier("tanhnet", 3 if size == 32 else 1, 10, size)
        assert model(torch.rand(2, 3 if size == 32 else 1, size, size)).shape == (2, 10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in build_classifier("tanhnet", 1, 10, 28).modules())


def test_the_weight_average_follows_every_step_and_goes_on_from_one_call_to_the_next():
    images, labels = pool()
    averaging = plain_distill(batch_size=20, weight_average=0.5)
    torch.manual_seed(0)
    student = LeNet()
    after_each_step = []

    def record(_batch):
        after_each_step.append(student.classifier.weight.detach().clone())

    average = {}
    distill(student, images, labels, averaging, seed=1, compute=CPU, progress=record, average=average)
    expected = after_each_step[0]  # a fresh average starts from the first step's weights
    for weights in after_each_step[1:]:
        expected = 0.5 * expected + 0.5 * weights
    assert len(after_each_step) == 3
    assert torch.allclose(average["classifier.weight"], expected)
    assert set(average) == set(student.state_dict())  # BatchNorm statistics are averaged too
    assert not torch.equal(average["classifier.weight"], student.classifier.weight)

    after_each_step.clear()
    distill(student, images, labels, averaging, seed=2, compute=CPU, progress=record, average=average)
    for weights in after_each_step:
        expected = 0.5 * expected + 0.5 * weights
    assert torch.allclose(average["classifier.weight"], expected)


def test_no_average_is_kept_unless_asked_for():
    images, labels = pool()
    average = {}
    distill(LeNet(), images, labels, plain_distill(batch_size=20), seed=1, compute=CPU, average=average)
    assert average == {}


def test_a_student_artifact_hands_on_its_average_only_when_asked_and_when_it_has_one():
    card = {"input_shape": [1, 28, 28], "num_classes": 10}
    torch.manual_seed(0)
    raw, other = state_to_tensors(LeNet()), state_to_tensors(LeNet())
    artifact = {**raw, **{AVERAGE_PREFIX + k: v for k, v in other.items()}}
    weight = "classifier.weight"
    assert torch.equal(load_student("lenet", card, artifact).state_dict()[weight], raw[weight])
    assert torch.equal(load_student("lenet", card, artifact, averaged=True).state_dict()[weight], other[weight])
    assert torch.equal(load_student("lenet", card, raw, averaged=True).state_dict()[weight], raw[weight])


class EmptyPool:
    """The labelled pool before round 1."""

    def load(self, rounds):
        return torch.empty(0, 1, 28, 28, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)


def test_a_round_keeps_the_average_beside_the_student_only_when_asked_to():
    images, labels = pool(40)
    card = {"input_shape": [1, 28, 28], "num_classes": 10}
    summary = {"method": "ideal", "budget_scope": "s/", "round": 0, "pool_size": 0, "queries_used": 0}
    summary |= {"planned_queries": 40, "class_counts": [0] * 10}
    torch.manual_seed(0)
    start = state_to_tensors(LeNet())
    kept = {}
    for decay in (None, 0.9):
        state, _ = distill_student(
            start, summary, EmptyPool(), images, labels, {}, card,
            plain_distill(batch_size=10, weight_average=decay), settings("ideal.student", architecture="lenet"),
            rounds=1, seed=0, compute=settings("compute"),
        )  # fmt: skip
        kept[decay] = {k for k in state if k.startswith(AVERAGE_PREFIX)}
    assert kept[None] == set() and kept[0.9] == {AVERAGE_PREFIX + k for k in start}


def test_the_consistency_term_is_zero_on_agreement_and_moves_only_the_views_prediction():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], requires_grad=True)
    assert abs(consistency(logits, logits.detach().clone()).item()) < 1e-6
    view_logits = torch.tensor([[0.0, 2.0, -1.0], [0.5, 0.5, 3.0]], requires_grad=True)
    loss = consistency(logits, view_logits)
    loss.backward()
    assert loss.item() > 0
    assert logits.grad is None  # the image's own prediction is the target, not something learned from
    assert view_logits.grad[0].abs().sum() > 0.1 and view_logits.grad[1].abs().sum() < 1e-6  # row 1 agrees


def test_distillation_with_consistency_makes_the_student_agree_with_itself_on_views_nobody_paid_for():
    rng = torch.Generator().manual_seed(0)
    templates = F.interpolate(torch.rand(10, 1, 7, 7, generator=rng), size=28, mode="bilinear")
    labels = torch.arange(10).repeat(6)
    noisy = templates[labels] + 0.1 * torch.rand(60, 1, 28, 28, generator=rng)
    images = (noisy.clamp(0, 1) * 255).to(torch.uint8)
    views = apply_crop_flip(images, draw_crop_flip(len(images), 4, torch.Generator().manual_seed(9)))
    disagreement = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        student = LeNet()
        distill(student, images, labels, plain_distill(batch_size=20, epochs=5, consistency_weight=weight), 1, CPU)
        with torch.no_grad():
            student.eval()
            disagreement[weight] = consistency(student(to_float(images)), student(to_float(views))).item()
    assert disagreement[1.0] < 0.75 * disagreement[0.0]
