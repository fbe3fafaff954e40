"""Load benchmark of the HTTP teacher: concurrent HttpTeacher clients for a bounded time.

Starts `ideal-teacher serve` on 127.0.0.1 with a small LeNet (.pt2) unless --url is given
(then the token comes from --token-env), runs --clients threads that each label fresh random
batches (so every request is billed, none replayed) for --duration seconds, and writes
throughput and p50/p99 latency to benchmarks/results/http_load.json.

    python benchmarks/http_load.py --clients 4 --batch 100 --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ideal_pipeline.models.classifiers import LeNet
from ideal_pipeline.teacher.http_client import (
    HttpTeacher,
    TeacherProtocolError,
    TeacherRequestRejected,
    TeacherUnavailable,
)


def _start_server(workdir: Path, max_batch: int) -> tuple[subprocess.Popen, str]:
    model = workdir / "lenet.pt2"
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))
    program = torch.export.export(LeNet().eval(), (torch.rand(2, 1, 28, 28),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(model))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ["IDEAL_TEACHER_TOKEN"] = "benchmark-token"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "ideal_pipeline.teacher.server.cli", "serve", "--model", str(model)]
    command += ["--port", str(port)]
    command += ["--input-shape", "1,28,28", "--max-batch", str(max_batch), "--log-level", "warning"]
    command += ["--trust-model-file", "--state-db", str(workdir / "server-state.sqlite")]  # we exported the model
    server = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return server, url + "/labels"
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError("teacher server did not start")
        time.sleep(0.1)


def _client(url: str, token_env: str, batch: int, stop: float, latencies: list[float], errors: list[str]) -> None:
    teacher = HttpTeacher(url, token_env, max_batch=batch, timeout_s=30, max_retries=3)
    generator = torch.Generator().manual_seed(threading.get_ident() % 2**31)
    while time.perf_counter() < stop:
        images = torch.rand(batch, 1, 28, 28, generator=generator)
        started = time.perf_counter()
        try:
            teacher.label(images)
            latencies.append(time.perf_counter() - started)
        except (TeacherUnavailable, TeacherRequestRejected, TeacherProtocolError) as error:  # count, go on
            errors.append(type(error).__name__)
    teacher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="images per request")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--url", default=None, help="benchmark this server instead of a local one")
    parser.add_argument("--token-env", default="IDEAL_TEACHER_TOKEN")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "http_load.json")
    args = parser.parse_args()

    server = None
    with tempfile.TemporaryDirectory() as workdir:
        url = args.url
        if url is None:
            server, url = _start_server(Path(workdir), max_batch=max(args.batch, 1000))
        try:
            latencies: list[float] = []
            errors: list[str] = []
            stop = time.perf_counter() + args.duration
            threads = [
                threading.Thread(target=_client, args=(url, args.token_env, args.batch, stop, latencies, errors))
                for _ in range(args.clients)
            ]
            started = time.perf_counter()
            [thread.start() for thread in threads]
            [thread.join(args.duration + 120) for thread in threads]
            elapsed = time.perf_counter() - started
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)

    ms = np.array(latencies) * 1000
    result = {
        "config": {
            "clients": args.clients,
            "batch": args.batch,
            "duration_s": args.duration,
            "server": args.url or "local LeNet .pt2, cpu",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "requests": len(latencies),
        "errors": len(errors),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "images_per_s": round(len(latencies) * args.batch / elapsed, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
            "mean": round(float(ms.mean()), 2) if len(ms) else None,
            "max": round(float(ms.max()), 2) if len(ms) else None,
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
