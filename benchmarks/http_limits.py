"""Limits of `ideal-teacher serve` under abusive clients, measured against a real server process.

Each scenario starts a fresh server (a LeNet .pt2 on 127.0.0.1, two client tokens: an abusive
tenant and an honest one), abuses it from raw sockets, meanwhile sends the honest tenant's
requests (10 images each, a new connection each) and records their latency, and reads the server's
memory (VmRSS/VmHWM) and open file descriptors from /proc:

- headers: `--header-clients` connections each send one header line of `--header-mib` MiB;
- stalled: the abusive tenant sends the headers and 138 bytes of `--stalled` uploads, then nothing;
- idle: `--idle` connections that never send a byte, with the server limited to `--fd-limit`
  file descriptors (RLIMIT_NOFILE, soft and hard).

    python benchmarks/http_limits.py                       # this checkout, default limits
    git archive 76e1aa2 src | tar -x -C /tmp/before        # the server before the limits, to compare
    python benchmarks/http_limits.py --label before --server-src /tmp/before/src --server-module ideal_pipeline.teacher.cli

Results are merged by `--label` into benchmarks/results/http_limits.json and summarised in http_limits.md.
Arguments after `--` go to `ideal-teacher serve`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import resource
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ideal_pipeline.models.classifiers import LeNet

ABUSER, HONEST = "abusive-tenant-token", "honest-tenant-token"
RESULTS = ROOT / "benchmarks" / "results"


def _npy(n: int, seed: int = 0) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


class Server:
    """`ideal-teacher serve` in a subprocess, limited to `fd_limit` descriptors."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args, self.workdir = args, workdir

    def __enter__(self) -> Self:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": self.args.server_src, "IDEAL_TEACHER_TOKEN": f"{ABUSER},{HONEST}"}
        command = [sys.executable, "-m", self.args.server_module, "serve", "--model", str(self.workdir / "lenet.pt2")]
        command += ["--port", str(port), "--input-shape", "1,28,28", "--trust-model-file", "--log-level", "error"]
        command += ["--state-db", str(self.workdir / f"state-{port}.sqlite"), *self.args.server_args]
        # The shell sets the descriptor limit (soft and hard) and becomes the server: the server starts under it.
        limited = ["sh", "-c", 'ulimit -n "$0" && exec "$@"', str(self.args.fd_limit), *command]
        self.process = subprocess.Popen(limited, env=env)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.process.kill()
                raise RuntimeError("teacher server did not start")
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.wait(30)

    def memory_mib(self) -> dict[str, float]:
        lines = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        return {name: round(int(fields[name].split()[0]) / 1024, 1) for name in ("VmRSS", "VmHWM")}

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))


def _connect(url: str, timeout_s: float = 5.0) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout_s)


def _status(sock: socket.socket, timeout_s: float) -> str:
    """The answer's status code, 'closed' without one, 'none' if nothing came within `timeout_s`."""
    sock.settimeout(timeout_s)
    try:
        data = sock.recv(65536)
    except TimeoutError:
        return "none"
    except OSError:
        return "closed"
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"


def honest_traffic(url: str, seconds: float, timeout_s: float) -> dict:
    """The honest tenant's sequential requests for `seconds`: latency of answers, count of each failure."""
    body, headers = _npy(10, seed=1), {"Authorization": f"Bearer {HONEST}"}
    latencies, failures = [], collections.Counter()
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        started = time.monotonic()
        try:
            answer = httpx.post(url + "/labels", content=body, headers=headers, timeout=timeout_s)
            if answer.status_code == 200:
                latencies.append(time.monotonic() - started)
            else:
                failures[str(answer.status_code)] += 1
        except httpx.HTTPError as error:
            failures[type(error).__name__] += 1
    ms = np.array(latencies) * 1000
    summary = {"answered": len(latencies), "failed": dict(failures)}
    if len(ms):
        summary.update({f"{name}_ms": round(float(np.percentile(ms, q)), 1) for name, q in (("p50", 50), ("p99", 99))})
        summary["max_ms"] = round(float(ms.max()), 1)
    return summary


def oversized_headers(server: Server, args: argparse.Namespace) -> dict:
    """`header_clients` connections each send one header line of `header_mib` MiB, as fast as loopback takes it."""
    before, started = server.memory_mib(), time.monotonic()
    sent, statuses = [0] * args.header_clients, [""] * args.header_clients

    def send(i: int) -> None:
        sock = _connect(server.url, timeout_s=60)
        chunk = b"a" * 2**20
        try:
            sock.sendall(b"POST /labels HTTP/1.1\r\nHost: teacher\r\nX-Big: ")
            for _ in range(args.header_mib):
                if time.monotonic() - started > args.header_seconds:  # a server that buffers it all reads slowly
                    break
                sock.sendall(chunk)
                sent[i] += len(chunk)
                if select.select([sock], [], [], 0)[0]:
                    break
            sock.sendall(b"\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass
        statuses[i] = _status(sock, 10)
        sock.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(args.header_clients)]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    return {
        "connections": args.header_clients,
        "header_mib_each": args.header_mib,
        "mib_sent_each": [round(n / 2**20, 2) for n in sent],
        "statuses": statuses,
        "seconds": round(time.monotonic() - started, 1),
        "send_cut_off_s": args.header_seconds,
        "server_mib_before": before,
        "server_mib_after": server.memory_mib(),
        "honest_after": honest_traffic(server.url, 3, args.timeout),
    }


def stalled_uploads(server: Server, args: argparse.Namespace) -> dict:
    body = _npy(100)
    head = f"POST /labels HTTP/1.1\r\nHost: teacher\r\nAuthorization: Bearer {ABUSER}\r\nContent-Length: {len(body)}"
    stalled = [_connect(server.url) for _ in range(args.stalled)]
    for sock in stalled:
        sock.sendall(head.encode() + b"\r\n\r\n" + body[:138])
    time.sleep(0.5)
    started = time.monotonic()
    honest = honest_traffic(server.url, args.seconds, args.timeout)
    deadline = started + args.stall_wait
    statuses = [_status(sock, max(0.1, deadline - time.monotonic())) for sock in stalled]
    return {
        "stalled_uploads": args.stalled,
        "honest_while_stalled": honest,
        "stalled_answers": statuses,
        "stalled_answered_after_s": round(time.monotonic() - started, 1),
        "server_mib": server.memory_mib(),
    }


def idle_connections(server: Server, args: argparse.Namespace) -> dict:
    sockets, refused = [], collections.Counter()
    started = time.monotonic()
    for _ in range(args.idle):
        if time.monotonic() - started > 60:  # a server that stopped accepting makes each connect wait
            refused["gave up after 60 s"] += 1
            continue
        try:
            sockets.append(_connect(server.url, timeout_s=2))
        except OSError as error:
            refused[type(error).__name__] += 1
    opened_in = time.monotonic() - started
    time.sleep(1)
    descriptors, closed_at_once = server.descriptors(), _count_closed(sockets)
    honest = honest_traffic(server.url, args.seconds, args.timeout)
    closed = _count_closed(sockets)
    for sock in sockets:
        sock.close()
    return {
        "idle_connections": args.idle,
        "server_fd_limit": args.fd_limit,
        "connected": len(sockets),
        "connect_failures": dict(refused),
        "connect_seconds": round(opened_in, 1),
        "closed_by_server_1s_after": closed_at_once,
        "server_descriptors_1s_after": descriptors,
        "closed_by_server_at_end": closed,
        "honest_meanwhile": honest,
        "server_mib": server.memory_mib(),
    }


def _count_closed(sockets: list[socket.socket]) -> int:
    return sum(1 for sock in _readable(sockets) if _peek_closed(sock))


def _readable(sockets: list[socket.socket]) -> list[socket.socket]:
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in sockets}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(0)]


def _peek_closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


SCENARIOS = {"headers": oversized_headers, "stalled": stalled_uploads, "idle": idle_connections}


def _summary(results: dict) -> str:
    lines = ["# HTTP teacher server under abusive clients", "", "Produced by `benchmarks/http_limits.py`.", ""]
    for label, run in results.items():
        load = run.get("load_average_1min", {})
        lines += [f"## {label}", "", f"- server: `{run['server']}`", f"- machine: {run['machine']}; load {load}", ""]
        baseline = run["baseline"]
        lines.append(f"- no abuse: honest p50 {baseline.get('p50_ms')} ms, max {baseline.get('max_ms')} ms")
        if "headers" in run:
            h = run["headers"]
            lines.append(
                f"- {h['connections']} headers of {h['header_mib_each']} MiB: answers {h['statuses']}, MiB sent each "
                f"{h['mib_sent_each']}; server RSS {h['server_mib_before']['VmRSS']} -> peak {h['server_mib_after']['VmHWM']} MiB"
            )
        if "stalled" in run:
            s, h = run["stalled"], run["stalled"]["honest_while_stalled"]
            lines.append(
                f"- {s['stalled_uploads']} stalled uploads: honest answered {h['answered']} (p50 {h.get('p50_ms')} ms, "
                f"max {h.get('max_ms')} ms), failed {h['failed']}; stalled answered {s['stalled_answers']} "
                f"after {s['stalled_answered_after_s']} s"
            )
        if "idle" in run:
            i, h = run["idle"], run["idle"]["honest_meanwhile"]
            lines.append(
                f"- {i['idle_connections']} idle connections (server fd limit {i['server_fd_limit']}): "
                f"{i['connected']} connected, {i['closed_by_server_1s_after']} closed by the server 1 s later (server "
                f"fds {i['server_descriptors_1s_after']}), {i['closed_by_server_at_end']} after the honest traffic; "
                f"honest answered {h['answered']} (p50 {h.get('p50_ms')} ms, max {h.get('max_ms')} ms), "
                f"failed {h['failed']}"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="name of this run in the results")
    parser.add_argument("--server-src", default=str(ROOT / "src"), help="PYTHONPATH of the server to measure")
    parser.add_argument("--server-module", default="ideal_pipeline.teacher.server.cli")
    parser.add_argument("--scenarios", default="headers,stalled,idle")
    parser.add_argument("--header-clients", type=int, default=4)
    parser.add_argument("--header-mib", type=int, default=256)
    parser.add_argument("--header-seconds", type=float, default=60.0, help="stop sending a header after this")
    parser.add_argument("--stalled", type=int, default=2)
    parser.add_argument("--stall-wait", type=float, default=75.0, help="seconds to wait for answers to stalled uploads")
    parser.add_argument("--idle", type=int, default=6000)
    parser.add_argument("--fd-limit", type=int, default=4096, help="the server's RLIMIT_NOFILE")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of honest traffic under abuse")
    parser.add_argument("--timeout", type=float, default=10.0, help="the honest client's timeout per request")
    parser.add_argument("--output", type=Path, default=RESULTS / "http_limits.json")
    parser.add_argument("server_args", nargs="*", help="after --: arguments for `ideal-teacher serve`")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)

    load_at_start = round(os.getloadavg()[0], 2)  # the machine may be shared: timings depend on it
    run = {
        "server": f"{args.server_module} from {args.server_src} {' '.join(args.server_args)}".strip(),
        "machine": f"{os.cpu_count()} CPUs ({_cpu_model()}), python {platform.python_version()}",
    }
    with tempfile.TemporaryDirectory() as workdir:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(LeNet().eval(), (torch.rand(2, 1, 28, 28),), dynamic_shapes={"x": {0: batch}})
        torch.export.save(program, str(Path(workdir) / "lenet.pt2"))
        with Server(args, Path(workdir)) as server:
            run["baseline"] = honest_traffic(server.url, 5, args.timeout)
            run["server_mib_idle"] = server.memory_mib()
        for name in args.scenarios.split(","):
            with Server(args, Path(workdir)) as server:
                run[name] = SCENARIOS[name](server, args)
            print(name, json.dumps(run[name]), flush=True)
    run["load_average_1min"] = {"start": load_at_start, "end": round(os.getloadavg()[0], 2)}
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results.setdefault(args.label, {}).update(run)  # a run of some scenarios replaces only those
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(_summary(results))
    print(json.dumps(run, indent=2))


if __name__ == "__main__":
    main()
