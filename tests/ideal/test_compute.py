"""Threads and precision chosen for the machine, resolved once (`compute.resolve_compute`)."""

from __future__ import annotations

import os

import pytest
import torch

from ideal_pipeline import compute
from ideal_pipeline.parameter_schema import ParameterError, validate_parameters
from tests.conftest import base_parameters


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def resolved(device="cpu", num_threads=0, precision="fp32"):
    return compute.resolve_compute({"device": device, "num_threads": num_threads, "precision": precision})


def test_an_integer_sets_exactly_that_many_threads():
    assert resolved(num_threads=1).threads == 1 and torch.get_num_threads() == 1


def test_zero_keeps_the_current_setting():
    torch.set_num_threads(1)
    assert resolved(num_threads=0).threads == 0 and torch.get_num_threads() == 1


def test_auto_shares_the_usable_cores_between_concurrent_runs(monkeypatch):
    monkeypatch.setattr(compute, "usable_cores", lambda: 16)
    monkeypatch.delenv(compute.CONCURRENT_RUNS_ENV, raising=False)
    assert resolved(num_threads="auto").threads == 16
    monkeypatch.setenv(compute.CONCURRENT_RUNS_ENV, "3")
    assert resolved(num_threads="auto").threads == 5 and torch.get_num_threads() == 5
    monkeypatch.setenv(compute.CONCURRENT_RUNS_ENV, "40")
    assert resolved(num_threads="auto").threads == 1


def test_auto_on_cuda_takes_few_threads(monkeypatch):
    monkeypatch.setattr(compute, "usable_cores", lambda: 16)
    monkeypatch.delenv(compute.CONCURRENT_RUNS_ENV, raising=False)
    assert compute._threads("auto", torch.device("cuda")) == compute.CUDA_RUN_THREADS
    monkeypatch.setattr(compute, "usable_cores", lambda: 1)
    assert compute._threads("auto", torch.device("cuda")) == 1


def test_usable_cores_respect_the_affinity_mask():
    assert 1 <= compute.usable_cores() <= len(os.sched_getaffinity(0))


def test_a_cgroup_quota_is_read_in_whole_cpus(tmp_path):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert compute._cgroup_cpu_quota(quota) == 1
    quota.write_text("max 100000\n")
    assert compute._cgroup_cpu_quota(quota) is None
    assert compute._cgroup_cpu_quota(tmp_path / "absent") is None
    quota.write_text("garbage")
    assert compute._cgroup_cpu_quota(quota) is None


@pytest.mark.parametrize("bad", [-1, 2.5, "four", True])
def test_a_bad_thread_setting_is_a_clear_error(bad):
    params = base_parameters()
    params["compute"]["num_threads"] = bad
    with pytest.raises(ParameterError, match="num_threads"):
        validate_parameters(params)


@pytest.mark.parametrize("bad", ["0", "two", "-1"])
def test_a_bad_concurrent_runs_variable_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv(compute.CONCURRENT_RUNS_ENV, bad)
    with pytest.raises(compute.ComputeUnavailable, match=compute.CONCURRENT_RUNS_ENV):
        resolved(num_threads="auto")


def test_explicit_precisions_resolve_to_their_dtype():
    assert resolved(precision="fp32").precision == torch.float32
    assert resolved(precision="bf16").precision == torch.bfloat16


def test_auto_precision_follows_the_cpu_bf16_instructions(monkeypatch):
    compute._cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(compute, "_cpuinfo_field", lambda name: "avx512f avx512_bf16")
    assert resolved(precision="auto").precision == torch.bfloat16
    compute._cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(compute, "_cpuinfo_field", lambda name: "avx512f avx2")
    assert resolved(precision="auto").precision == torch.float32
    compute._cpu_has_native_bf16.cache_clear()


def test_auto_precision_is_fp32_on_a_cpu_without_native_bf16():
    compute._cpu_has_native_bf16.cache_clear()
    flags = set(compute._cpuinfo_field("flags").split())
    if flags & {"avx512_bf16", "amx_bf16"} or not flags:
        pytest.skip("this CPU has native bf16 (or no /proc/cpuinfo): the check is for CPUs without it")
    assert resolved(precision="auto").precision == torch.float32


@pytest.mark.parametrize("bad", ["fp16", "float32"])
def test_an_unknown_precision_is_a_clear_error(bad):
    params = base_parameters()
    params["compute"]["precision"] = bad
    with pytest.raises(ParameterError, match="compute.precision"):
        validate_parameters(params)


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(compute.ComputeUnavailable, match="CUDA is not available"):
        resolved(device="cuda")


def test_the_loss_meter_averages_like_python_floats():
    meter = compute.LossMeter(compute.CPU.device)
    batches = [(torch.tensor(0.1234567), 250), (torch.tensor(2.7182817), 250), (torch.tensor(1.0000001), 13)]
    total = 0.0
    for loss, samples in batches:
        meter.add(loss, samples)
        total += loss.item() * samples
    assert meter.mean() == total / 513
    assert compute.LossMeter(compute.CPU.device).mean() == 0.0
