"""Accuracy levers: early stop by hit rate, momentum kept across rounds, logit adjustment,
the learning rate falling over the rounds, a victim family without BatchNorm."""

import itertools

import torch
from torch import nn

from ideal_pipeline.compute import CPU
from ideal_pipeline.ideal.distillation import distill, round_learning_rate
from ideal_pipeline.ideal.generation import train_generator
from ideal_pipeline.models.classifiers import LeNet, build_classifier
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
