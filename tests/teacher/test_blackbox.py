"""The label-only teacher and the component that pays for its labels."""

import pytest
import torch

from ideal_pipeline.models.classifiers import LeNet
from ideal_pipeline.models.files import load_model_file, save_model_file
from ideal_pipeline.teacher.blackbox import AccountedTeacher, QueryBudgetExceeded, TeacherInputError, image_key
from ideal_pipeline.teacher.ledger import QueryLedger
from ideal_pipeline.teacher.local import LocalModelTeacher, ModelCache


class CountingTeacher:
    """Labels = sum of pixels mod 10; records every image it is sent."""

    def __init__(self, fail_after_calls: int | None = None):
        self.sent = []
        self.fail_after_calls = fail_after_calls

    def label(self, images):
        if self.fail_after_calls is not None and len(self.sent) >= self.fail_after_calls:
            raise ConnectionError("teacher went away")
        self.sent.append(images.clone())
        return (images.flatten(1).sum(1) * 255).round().long() % 10


def distinct_images(n, seed=0):
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def ledger(tmp_path):
    return QueryLedger(tmp_path / "ledger.sqlite")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt2", ".pt"])
def test_model_file_teacher_gives_the_models_top1_labels_only(tmp_path, suffix):
    torch.manual_seed(0)
    model = LeNet().eval()
    images = torch.rand(7, 1, 28, 28)
    save_model_file(model, tmp_path / f"teacher{suffix}", images[:2])
    teacher = LocalModelTeacher(tmp_path / f"teacher{suffix}", trusted=suffix != ".safetensors")
    labels = teacher.label(images)
    assert labels.dtype == torch.int64 and labels.shape == (7,)
    assert torch.equal(labels, model(images).argmax(1))
    # Nothing on the object reaches the model, its logits or its probabilities.
    public = [name for name in dir(teacher) if not name.startswith("__")]
    assert all(not isinstance(getattr(teacher, name), torch.nn.Module) for name in public)
    assert not any(word in name for name in public for word in ("logit", "prob", "model", "forward"))


def test_a_replaced_teacher_file_is_loaded_again(tmp_path):
    path, images = tmp_path / "teacher.safetensors", torch.rand(64, 1, 28, 28)
    torch.manual_seed(0)
    first = LeNet().eval()
    save_model_file(first, path, images[:2])
    cache = ModelCache()
    assert cache.load(path, "cpu", False)[0] is cache.load(path, "cpu", False)[0]  # one load per process
    torch.manual_seed(1)
    second = LeNet().eval()
    second.classifier.bias.data += 3 * torch.eye(10)[7]  # answers differ from the first model's
    save_model_file(second, path, images[:2])
    assert torch.equal(LocalModelTeacher(path, cache=cache).label(images), second(images).argmax(1))


def test_loading_a_file_that_is_not_a_model_is_a_clear_error(tmp_path):
    junk = tmp_path / "teacher.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a TorchScript"):
        load_model_file(junk, trusted=True)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model_file(tmp_path / "missing.pt2")
    junk_weights = tmp_path / "teacher.safetensors"
    junk_weights.write_bytes(b"not a model either")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_model_file(junk_weights)


def test_every_sample_is_labelled_exactly_once(ledger):
    teacher = CountingTeacher()
    accounted = AccountedTeacher(teacher, ledger, max_queries=1000, max_batch=7)
    images = distinct_images(30)
    labels = accounted.label(images)
    sent = torch.cat(teacher.sent)
    assert len(sent) == 30 and len({image_key(image) for image in (sent * 255).round().byte()}) == 30
    assert accounted.queries_sent == 30 == ledger.paid_queries()
    assert torch.equal(labels, teacher.label(images.float() / 255))


def test_the_exact_stored_image_is_sent(ledger):
    teacher = CountingTeacher()
    images = distinct_images(5)
    AccountedTeacher(teacher, ledger, max_queries=10).label(images)
    assert torch.equal((teacher.sent[0] * 255).round().byte(), images)
    assert teacher.sent[0].dtype == torch.float32 and teacher.sent[0].max() <= 1


def test_a_rerun_pays_nothing_twice(ledger, tmp_path):
    images = distinct_images(20)
    first = AccountedTeacher(CountingTeacher(), ledger, max_queries=20).label(images)
    teacher = CountingTeacher()
    again = AccountedTeacher(teacher, QueryLedger(tmp_path / "ledger.sqlite"), max_queries=20)
    assert torch.equal(again.label(images), first)
    assert teacher.sent == [] and again.queries_sent == 0


def test_a_mirrored_copy_is_a_new_image_and_costs_a_query(ledger):
    images = distinct_images(4)
    accounted = AccountedTeacher(CountingTeacher(), ledger, max_queries=100)
    accounted.label(images)
    accounted.label(images.flip(-1))
    assert ledger.paid_queries() == 8


def test_duplicates_in_one_request_are_one_query(ledger):
    image = distinct_images(1)
    teacher = CountingTeacher()
    labels = AccountedTeacher(teacher, ledger, max_queries=5).label(image.repeat(3, 1, 1, 1))
    assert len(torch.cat(teacher.sent)) == 1 and labels.tolist() == [labels[0].item()] * 3


def test_budget_is_checked_before_sending(ledger):
    teacher = CountingTeacher()
    accounted = AccountedTeacher(teacher, ledger, max_queries=25, max_batch=10)
    with pytest.raises(QueryBudgetExceeded, match=r"max_queries=25.*already spent 20"):
        accounted.label(distinct_images(30))
    # The two chunks that fitted were paid and kept; the third was never sent.
    assert sum(len(batch) for batch in teacher.sent) == 20 == ledger.paid_queries()


def test_a_crash_mid_labelling_keeps_every_paid_label(ledger, tmp_path):
    images = distinct_images(30)
    with pytest.raises(ConnectionError):
        AccountedTeacher(CountingTeacher(fail_after_calls=2), ledger, max_queries=30, max_batch=10).label(images)
    assert ledger.paid_queries() == 20
    resumed_teacher = CountingTeacher()
    resumed = AccountedTeacher(resumed_teacher, QueryLedger(tmp_path / "ledger.sqlite"), max_queries=30, max_batch=10)
    labels = resumed.label(images)
    assert resumed.queries_sent == 10 and ledger.paid_queries() == 30
    assert torch.equal(labels, CountingTeacher().label(images.float() / 255))


@pytest.mark.parametrize(
    "images,message",
    [
        (torch.rand(2, 1, 28, 28), "uint8"),
        (torch.zeros(2, 28, 28, dtype=torch.uint8), r"\(N, C, H, W\)"),
        (torch.zeros(2, 3, 28, 28, dtype=torch.uint8), "expects"),
        ([[0]], "torch.Tensor"),
    ],
)
def test_bad_input_is_refused_before_any_query(ledger, images, message):
    teacher = CountingTeacher()
    with pytest.raises(TeacherInputError, match=message):
        AccountedTeacher(teacher, ledger, max_queries=10, input_shape=(1, 28, 28)).label(images)
    assert teacher.sent == [] and ledger.paid_queries() == 0


def test_a_teacher_answering_out_of_range_labels_is_caught(ledger):
    class Broken:
        def label(self, images):
            return torch.full((len(images),), 42)

    with pytest.raises(RuntimeError, match="outside"):
        AccountedTeacher(Broken(), ledger, max_queries=10, num_classes=10).label(distinct_images(2))
    assert ledger.paid_queries() == 0
