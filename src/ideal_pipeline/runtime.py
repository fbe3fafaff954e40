"""Small helpers shared by the nodes: devices, threads, precision, seeds, model (de)serialisation."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ideal_pipeline.models.classifiers import build_classifier


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use device: cpu or auto")
    return device


CONCURRENT_RUNS_ENV = "IDEAL_CONCURRENT_RUNS"
PRECISIONS = ("auto", "fp32", "bf16")
# Threads for a CUDA run: the GPU does the work; the CPU only draws random numbers and labels
# with a local teacher, and more threads would only compete with the other runs on the machine.
CUDA_RUN_THREADS = 2


def set_threads(setting: int | str | None = 0, device: torch.device | str | None = None) -> int:
    """Set torch's intra-op threads for this process; returns the count now in use.

    - ``0`` or ``None``: change nothing (torch's default, one thread per core of the machine, unless
      set earlier in the process), as before.
    - ``n > 0``: exactly ``n`` threads.
    - ``"auto"``: no oversubscription when several runs share a machine. On CUDA, 2 threads
      (the GPU does the work). On a CPU, the cores this process may use (its CPU affinity, capped
      by a cgroup CPU quota) divided by the environment variable IDEAL_CONCURRENT_RUNS (the number
      of runs started side by side; 1 when unset), at least 1. Oversubscription is costly: a
      2-thread run on 2 cores slowed up to 3x whenever another process took one of the cores.
    """
    is_count = isinstance(setting, int) and not isinstance(setting, bool)
    if setting is None or (is_count and setting == 0):
        return torch.get_num_threads()
    if setting == "auto":
        count = auto_threads(torch.device(device) if device is not None else torch.device("cpu"))
    elif is_count and setting > 0:
        count = setting
    else:
        raise ValueError(f"num_threads must be 'auto', 0 (torch's default) or a positive integer, got {setting!r}")
    torch.set_num_threads(count)
    return count


def auto_threads(device: torch.device) -> int:
    """The thread count `set_threads("auto", device)` uses (see there)."""
    budget = max(1, usable_cores() // concurrent_runs())
    return min(CUDA_RUN_THREADS, budget) if device.type == "cuda" else budget


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_cpu_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """Whole CPUs allowed by the cgroup v2 quota ("max" = none); None when there is none or no file."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else max(1, int(quota) // int(period))
    except (OSError, ValueError):  # no cgroup v2 file, or one we cannot read: no quota known
        return None


def concurrent_runs() -> int:
    value = os.environ.get(CONCURRENT_RUNS_ENV, "").strip()
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{CONCURRENT_RUNS_ENV} must be a positive integer (runs sharing this machine), got {value!r}")
    return int(value)


def resolve_precision(setting: str | torch.dtype, device: torch.device | str) -> torch.dtype:
    """The compute precision of the training loops: torch.float32 or torch.bfloat16 (autocast).

    - ``"fp32"``: float32 everywhere (the results of earlier versions).
    - ``"bf16"``: bfloat16 autocast (weights, optimiser state and stored images stay float32 / uint8);
      refused on a GPU without bf16 support. On a CPU without native bf16 instructions it runs, slowly.
    - ``"auto"``: bf16 where the hardware runs it natively (CUDA with bf16 support; an x86 CPU with
      AVX512-BF16 or AMX-BF16), fp32 elsewhere. Decided from the reported capability, not a timing
      probe: a probe on a shared, noisy machine could pick differently from run to run, and then
      the same parameters would not give the same results.
    """
    device = torch.device(device)
    if isinstance(setting, torch.dtype):
        return check_precision(setting)
    if setting == "fp32":
        return torch.float32
    if setting == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ValueError(f"precision bf16 requested but {torch.cuda.get_device_name(device)} has no bf16 support")
        return torch.bfloat16
    if setting == "auto":
        return torch.bfloat16 if bf16_is_native(device) else torch.float32
    raise ValueError(f"precision must be one of {PRECISIONS}, got {setting!r}")


def check_precision(precision: str | torch.dtype, device: torch.device | str = "cpu") -> torch.dtype:
    """A precision keyword argument as a dtype: a setting string is resolved for `device`."""
    if isinstance(precision, str):
        return resolve_precision(precision, device)
    if precision not in (torch.float32, torch.bfloat16):
        raise ValueError(f"precision must be torch.float32, torch.bfloat16 or one of {PRECISIONS}, got {precision!r}")
    return precision


def bf16_is_native(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return _cpu_has_native_bf16()
    return False


@functools.cache
def _cpu_has_native_bf16() -> bool:
    flags = _cpuinfo_flags()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def _cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = path.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def autocast(device: torch.device, precision: torch.dtype) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass and loss, or nothing for fp32."""
    if precision == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision)


class LossMeter:
    """Sum of (batch loss x batch size) kept on the device and read once: no host sync per step.

    Accumulated in float64 where the device has it: each term and sum then round exactly as the
    Python floats of `loss.item() * n` did, so the means are bitwise those of earlier versions.
    """

    def __init__(self, device: torch.device):
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.total = torch.zeros((), dtype=dtype, device=device)
        self.seen = 0

    def add(self, loss: torch.Tensor, samples: int) -> None:
        self.total += loss.detach().to(self.total.dtype) * samples
        self.seen += samples

    def mean(self) -> float:
        """The mean loss per sample (a host sync); 0.0 when nothing was added."""
        return self.total.item() / max(self.seen, 1)


def input_shape(api_card: dict[str, Any]) -> tuple[int, int, int]:
    channels, height, width = api_card["input_shape"]
    if height != width:
        raise ValueError(f"square images only, the teacher's input shape is {api_card['input_shape']}")
    return channels, height, width


def build_student(architecture: str, api_card: dict[str, Any]) -> nn.Module:
    """A student shaped for the teacher's API (input shape and classes from its card)."""
    channels, size, _ = input_shape(api_card)
    return build_classifier(architecture, channels, int(api_card["num_classes"]), size)


def state_to_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


# A student artifact may also hold its optimiser's momentum (keys `momentum.<parameter>`).
MOMENTUM_PREFIX = "momentum."


def load_student(architecture: str, api_card: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    student = build_student(architecture, api_card)
    student.load_state_dict({k: v for k, v in state.items() if not k.startswith(MOMENTUM_PREFIX)})
    return student


def settings_from(cls, values: dict[str, Any], section: str, ignore: tuple[str, ...] = ()):
    """Build a settings dataclass; an unknown parameter name is an error that names it."""
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = set(values) - known - set(ignore)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} in {section}; known: {sorted(known | set(ignore))}")
    return cls(**{k: v for k, v in values.items() if k in known})


def round_seed(seed: int, round_index: int) -> int:
    """The seed of one round of a run: distinct per round and per run seed, the same on every rerun."""
    return seed * 100_003 + round_index


def compute_signature(compute: dict[str, Any]) -> dict[str, Any]:
    """What decides the arithmetic of a run on this machine: device, precision, threads, torch, processor."""
    device = resolve_device(compute["device"])
    threads = compute["num_threads"]
    threads = auto_threads(device) if threads == "auto" else threads or torch.get_num_threads()
    processor = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model()
    return {
        "device": device.type,
        "precision": str(resolve_precision(compute["precision"], device)).removeprefix("torch."),
        "threads": threads,
        "torch": torch.__version__,
        "processor": processor,
    }


def _cpu_model(path: Path = Path("/proc/cpuinfo")) -> str:
    try:
        text = path.read_text()
    except OSError:
        return platform.processor() or platform.machine()
    names = [line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("model name")]
    return names[0] if names else platform.machine()


def use_compute(compute: dict[str, Any]) -> tuple[torch.device, torch.dtype]:
    """Apply `params:compute` in a node: sets the threads; returns the device and the precision."""
    device = resolve_device(compute["device"])
    set_threads(compute["num_threads"], device)
    return device, resolve_precision(compute["precision"], device)
