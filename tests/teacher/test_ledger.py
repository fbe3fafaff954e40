"""The ledger: labels bound to their teacher, spending reserved atomically across processes, tags."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import torch

from ideal_pipeline.models.classifiers import LeNet
from ideal_pipeline.models.files import file_bytes_fingerprint, model_fingerprint, save_model_file
from ideal_pipeline.pipelines.external_teacher.nodes import label_test_set
from ideal_pipeline.teacher import label_store
from ideal_pipeline.teacher.blackbox import (
    AccountedTeacher,
    PossiblyBilled,
    QueryBudgetExceeded,
    check_planned_spend,
    image_key,
)
from ideal_pipeline.teacher.connect import accounted_teacher, http_fingerprint
from ideal_pipeline.teacher.label_store import LabelStore
from ideal_pipeline.teacher.ledger import LedgerError, QueryLedger, TeacherMismatch
from tests.conftest import settings

pytestmark = pytest.mark.timeout(120)
CARD = {"kind": "model_file", "input_shape": [1, 28, 28], "num_classes": 10, "class_names": list(range(10))}


def distinct_images(n, seed=0):
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def pixel_sum_labels(images):
    return (images.flatten(1).sum(1) * 255).round().long() % 10


class BillingTeacher:
    """Labels = pixel sum mod 10; appends one line per image sent to `bill` (shared by processes)."""

    def __init__(self, bill, delay_s=0.0, fail=False):
        self.bill, self.delay_s, self.fail = bill, delay_s, fail

    def label(self, images):
        if self.fail:
            raise ConnectionError("teacher went away")
        with open(self.bill, "a") as f:  # O_APPEND: lines of concurrent writers do not mix
            f.write("x\n" * len(images))
        time.sleep(self.delay_s)
        return pixel_sum_labels(images)


class RecordingTeacher:
    """Labels = pixel sum mod 10; keeps every batch it is sent."""

    def __init__(self):
        self.sent = []

    def label(self, images):
        self.sent.append(images.clone())
        return pixel_sum_labels(images)


def billed(bill) -> int:
    return len(open(bill).read().splitlines()) if os.path.exists(bill) else 0


def teacher_files(tmp_path):
    """Two model files of the same shape whose answers differ."""
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = LeNet().eval()
        model.classifier.bias.data += 3 * torch.eye(10)[seed]  # different favourite classes
        path = tmp_path / f"teacher_{seed}.safetensors"
        save_model_file(model, path, torch.rand(2, 1, 28, 28))
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------ teacher binding
def test_another_teachers_labels_are_never_served(tmp_path):
    first, second = teacher_files(tmp_path)
    ledger = QueryLedger(tmp_path / "ledger.sqlite")
    images = distinct_images(40)
    accounted_teacher(settings("ideal.teacher_access", model_path=str(first)), CARD, ledger, 100).label(images)
    with pytest.raises(TeacherMismatch) as refusal:
        accounted_teacher(settings("ideal.teacher_access", model_path=str(second)), CARD, ledger, 100)
    message = str(refusal.value)
    fingerprints = [line for line in message.split() if line.startswith("model:sha256:")]
    assert len(set(fingerprints)) == 2 and "new ledger file" in message and "40 labels" in message
    assert ledger.paid_queries() == 40  # nothing of the second teacher was mixed in


def test_a_foreign_ledger_is_refused_even_when_written_meanwhile(tmp_path):
    """The check is repeated inside each reservation's transaction, not only at construction."""
    path = tmp_path / "ledger.sqlite"
    bill = tmp_path / "bill"
    late = AccountedTeacher(BillingTeacher(bill), QueryLedger(path), 100, teacher_fingerprint="teacher-b")
    AccountedTeacher(BillingTeacher(bill), QueryLedger(path), 100, teacher_fingerprint="teacher-a").label(
        distinct_images(5)
    )
    with pytest.raises(TeacherMismatch, match="teacher-a.*teacher-b"):
        late.label(distinct_images(5))
    assert billed(bill) == 5


def test_each_teacher_pays_into_its_own_ledger_of_the_store(tmp_path):
    first, second = teacher_files(tmp_path)
    store = LabelStore(tmp_path / "store", export_dir=tmp_path / "export")
    real_test = {"images": distinct_images(30), "labels": torch.arange(30) % 10}
    params = settings("external_teacher", max_batch=100, evaluation_max_queries=100)
    for path in (first, second, first):
        label_test_set(real_test, {**CARD, "model_path": str(path)}, store, params)
    assert [store.ledger(model_fingerprint(p)).paid_queries() for p in (first, second)] == [30, 30]
    assert len(list((tmp_path / "export").rglob("*.json"))) == 2  # one chunk per teacher, written once


def test_identical_weights_saved_by_two_processes_are_one_teacher(tmp_path):
    script = (
        "import sys, torch\n"
        "from ideal_pipeline.models.classifiers import LeNet\n"
        "from ideal_pipeline.models.files import save_model_file\n"
        "torch.manual_seed(0)\n"
        "save_model_file(LeNet(), sys.argv[1], torch.rand(2, 1, 28, 28))\n"
    )
    paths = [tmp_path / f"copy{i}.safetensors" for i in range(3)]
    for path in paths:
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    assert len({path.read_bytes() for path in paths}) == 1  # saved canonically
    assert len({model_fingerprint(path) for path in paths}) == 1
    first, second = teacher_files(tmp_path)
    assert model_fingerprint(first) != model_fingerprint(second)


def test_a_fingerprint_ignores_the_order_of_the_header(tmp_path):
    """A file written by another tool (header keys in another order) is the same teacher."""
    path, shuffled = teacher_files(tmp_path)[0], tmp_path / "shuffled.safetensors"
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    text = json.dumps(dict(reversed(list(header.items())))).encode()
    text += b" " * (-len(text) % 8)
    shuffled.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + size :])
    assert shuffled.read_bytes() != data and model_fingerprint(shuffled) == model_fingerprint(path)


def test_http_fingerprints_name_the_endpoint_and_its_card():
    base = http_fingerprint("http://a/labels", CARD)
    assert base == http_fingerprint("http://a/labels", {**CARD, "kind": "http", "url": "ignored"})
    assert base != http_fingerprint("http://b/labels", CARD)
    assert base != http_fingerprint("http://a/labels", {**CARD, "class_names": list("abcdefghij")})


def test_a_ledger_file_of_an_earlier_version_is_refused_and_can_be_imported(tmp_path, capsys):
    first, _ = teacher_files(tmp_path)
    old, images = tmp_path / "old.sqlite", distinct_images(3)
    connection = sqlite3.connect(old)
    connection.execute("CREATE TABLE labels (image_key TEXT PRIMARY KEY, label INTEGER, paid_at REAL, teacher TEXT)")
    connection.execute("CREATE TABLE reservations (image_key TEXT PRIMARY KEY, teacher TEXT, holder TEXT)")
    connection.execute("CREATE TABLE ledger_info (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    fingerprint = file_bytes_fingerprint(first.read_bytes())  # what that version named a model file
    connection.execute("INSERT INTO ledger_info VALUES ('teacher', ?)", (fingerprint,))
    connection.executemany("INSERT INTO labels VALUES (?, 7, 0, ?)", [(image_key(i), fingerprint) for i in images])
    connection.commit()
    connection.close()
    with pytest.raises(LedgerError, match="earlier version.*label_store import"):
        QueryLedger(old)
    store = tmp_path / "store"
    label_store.main(["--store", str(store), "import", str(old), "--model-file", str(first)])
    assert "3 labels merged" in capsys.readouterr().out
    ledger = LabelStore(store).ledger(model_fingerprint(first))
    bill = tmp_path / "bill"
    again = AccountedTeacher(BillingTeacher(bill), ledger, 10, teacher_fingerprint=model_fingerprint(first))
    assert again.label(images).tolist() == [7, 7, 7] and billed(bill) == 0


# ------------------------------------------------------------------------------ tags and the up-front check
def test_tags_count_rows_and_reused_labels_keep_theirs(tmp_path):
    ledger = QueryLedger(tmp_path / "ledger.sqlite")
    accounted = AccountedTeacher(BillingTeacher(tmp_path / "bill"), ledger, 100, teacher_fingerprint="t")
    accounted.label(distinct_images(10, seed=1), tag="ideal/seed=0/round=001")
    accounted.label(distinct_images(6, seed=2), tag="ideal/seed=0/round=002")
    accounted.label(torch.cat([distinct_images(4, seed=3), distinct_images(10, seed=1)]), tag="ideal/seed=1/round=001")
    assert ledger.paid_queries() == 20
    assert ledger.paid_queries("ideal/seed=0/") == 16 and ledger.paid_queries("ideal/seed=0/round=002") == 6
    assert ledger.paid_queries("ideal/seed=1/") == 4 and ledger.paid_queries("evaluate") == 0


def test_a_budget_counts_its_own_scope_only(tmp_path):
    ledger, bill = QueryLedger(tmp_path / "ledger.sqlite"), tmp_path / "bill"

    def scoped(scope):
        return AccountedTeacher(BillingTeacher(bill), ledger, 30, teacher_fingerprint="t", budget_scope=scope)

    scoped("run-a/").label(distinct_images(30, seed=1), tag="run-a/round=001")
    scoped("run-b/").label(distinct_images(30, seed=2), tag="run-b/round=001")  # another run: a budget of its own
    scoped("run-b/").label(distinct_images(30, seed=1), tag="run-b/round=002")  # run a's labels: free
    with pytest.raises(QueryBudgetExceeded, match="for 'run-a/'.*already spent 30"):
        scoped("run-a/").label(distinct_images(1, seed=3), tag="run-a/round=002")
    assert billed(bill) == 60 == ledger.paid_queries()


def test_the_planned_spend_must_fit_the_runs_budget():
    check_planned_spend(planned=80, spent=0, max_queries=80, scope="ideal/seed=0/run=1/")
    check_planned_spend(planned=80, spent=40, max_queries=80, scope="ideal/seed=0/run=1/")  # a rerun reuses its own
    with pytest.raises(QueryBudgetExceeded, match="plans 81 queries.*max_queries=80.*to 81"):
        check_planned_spend(planned=81, spent=0, max_queries=80, scope="ideal/seed=0/run=1/")
    with pytest.raises(QueryBudgetExceeded, match="90 already paid or reserved"):
        check_planned_spend(planned=80, spent=90, max_queries=80, scope="ideal/seed=0/run=1/")


# ------------------------------------------------------------------------------ atomic spending
def _label_in_process(path, bill, first, count, max_queries, results):
    images = distinct_images(160)[first : first + count]
    accounted = AccountedTeacher(
        BillingTeacher(bill, delay_s=0.02), QueryLedger(path), max_queries, max_batch=7, teacher_fingerprint="t"
    )
    try:
        labels = accounted.label(images, tag=f"p{first}")
        results.put((first, labels.tolist() == pixel_sum_labels(images.float() / 255).tolist(), accounted.queries_sent))
    except QueryBudgetExceeded:
        results.put((first, None, accounted.queries_sent))


def test_processes_sharing_a_ledger_stay_within_the_budget_together(tmp_path):
    """Three processes, 80 images each, overlapping by 40, each with max_queries=100: 160 wanted."""
    path, bill = tmp_path / "ledger.sqlite", tmp_path / "bill"
    QueryLedger(path)  # created once, as the catalog's dataset does
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=_label_in_process, args=(path, bill, first, 80, 100, results)) for first in (0, 40, 80)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=100) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    ledger = QueryLedger(path)
    assert billed(bill) <= 100
    assert ledger.paid_queries() == billed(bill) == sum(sent for _, _, sent in outcomes)
    assert ledger.reserved_queries() == 0
    assert all(correct is not False for _, correct, _ in outcomes)  # whoever finished got the right labels
    assert any(correct is None for _, correct, _ in outcomes)  # and the budget stopped someone


def test_threads_waiting_on_each_others_reservations_pay_once(tmp_path):
    path, bill = tmp_path / "ledger.sqlite", tmp_path / "bill"
    shared = QueryLedger(path)
    images = distinct_images(60)
    answers = {}

    def work(name, ledger):
        accounted = AccountedTeacher(
            BillingTeacher(bill, delay_s=0.01), ledger, 1000, max_batch=5, teacher_fingerprint="t"
        )
        answers[name] = accounted.label(images)

    threads = [threading.Thread(target=work, args=(i, shared if i % 2 else QueryLedger(path))) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = pixel_sum_labels(images.float() / 255)
    assert all(torch.equal(labels, expected) for labels in answers.values())
    assert billed(bill) == 60 == shared.paid_queries()


def test_a_failed_request_releases_its_reservation(tmp_path):
    ledger = QueryLedger(tmp_path / "ledger.sqlite")
    with pytest.raises(ConnectionError):
        AccountedTeacher(BillingTeacher(tmp_path / "bill", fail=True), ledger, 10, teacher_fingerprint="t").label(
            distinct_images(10)
        )
    assert ledger.spent_queries() == 0
    AccountedTeacher(BillingTeacher(tmp_path / "bill"), ledger, 10, teacher_fingerprint="t").label(distinct_images(10))
    assert ledger.paid_queries() == 10


def _label_forever(path, bill):
    AccountedTeacher(BillingTeacher(bill, delay_s=600), QueryLedger(path), 10, teacher_fingerprint="t").label(
        distinct_images(10)
    )


def test_a_killed_senders_reservation_keeps_counting_until_it_is_sent_again(tmp_path):
    path, bill = tmp_path / "ledger.sqlite", tmp_path / "bill"
    QueryLedger(path)
    sender = multiprocessing.get_context("spawn").Process(target=_label_forever, args=(path, bill))
    sender.start()
    deadline = time.monotonic() + 60
    while billed(bill) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    sender.kill()  # after sending: the teacher may have billed these 10
    sender.join()
    ledger = QueryLedger(path)
    assert (ledger.paid_queries(), ledger.reserved_queries(), ledger.spent_queries()) == (0, 10, 10)
    teacher = RecordingTeacher()
    resumed = AccountedTeacher(teacher, ledger, 10, teacher_fingerprint="t")
    with pytest.raises(QueryBudgetExceeded, match="already spent 10"):
        resumed.label(distinct_images(1, seed=5))  # a new image: the budget is spent
    # Before anything new, the killed batch was sent again exactly as it was (same images, same order).
    assert len(teacher.sent) == 1 and torch.equal(teacher.sent[0], distinct_images(10).float() / 255)
    assert (ledger.paid_queries(), ledger.reserved_queries(), resumed.replayed) == (10, 0, 10)
    labels = resumed.label(distinct_images(10))  # now known: free
    assert torch.equal(labels, pixel_sum_labels(distinct_images(10).float() / 255)) and len(teacher.sent) == 1


class LostAnswer(PossiblyBilled, ConnectionError):
    """The teacher billed the request, then the answer was lost on the way back."""


class IdempotentTeacher:
    """Bills each distinct request body once (an Idempotency-Key), answers replays free; loses `lose` answers."""

    def __init__(self, lose=0):
        self.lose, self.billed, self.answers = lose, 0, {}

    def label(self, images):
        key = hashlib.sha256(images.numpy().tobytes()).hexdigest()
        if key not in self.answers:
            self.billed += len(images)
            self.answers[key] = pixel_sum_labels(images)
        if self.lose:
            self.lose -= 1
            raise LostAnswer("connection reset after the teacher billed the request")
        return self.answers[key]


def test_a_lost_answer_keeps_its_reservation_and_the_bill_stays_within_the_budget(tmp_path):
    ledger, teacher = QueryLedger(tmp_path / "ledger.sqlite"), IdempotentTeacher(lose=1)
    accounted = AccountedTeacher(teacher, ledger, max_queries=40, max_batch=20, teacher_fingerprint="t")
    with pytest.raises(LostAnswer):
        accounted.label(distinct_images(20, seed=1))
    assert (teacher.billed, ledger.spent_queries(), ledger.reserved_queries()) == (20, 20, 20)
    accounted.label(distinct_images(20, seed=2))  # settles the lost request first (a free replay), then pays
    with pytest.raises(QueryBudgetExceeded):
        accounted.label(distinct_images(20, seed=3))
    assert teacher.billed == 40 == ledger.paid_queries() and ledger.reserved_queries() == 0


def test_a_request_refused_before_it_left_gives_its_budget_back(tmp_path):
    class Unreachable(PossiblyBilled, ConnectionError):
        may_have_been_billed = False

    class Refusing:
        def label(self, images):
            raise Unreachable("connection refused")

    ledger = QueryLedger(tmp_path / "ledger.sqlite")
    with pytest.raises(Unreachable):
        AccountedTeacher(Refusing(), ledger, 10, teacher_fingerprint="t").label(distinct_images(10))
    assert ledger.spent_queries() == 0
