"""What does the /metrics middleware add to a request?

    .venv/bin/python bench/metrics_overhead.py [--requests 2000] [--rounds 40] [--http 8]

A FastAPI app with one route, `GET /v1/jobs/{job_id}` returning a constant, is called
directly through ASGI (no socket, no HTTP parser: what is left is the framework and the
middleware), once bare and once wrapped in service.telemetry.middleware's
HttpMetricsMiddleware. Rounds alternate between the two so that load from other
processes lands on both alike; the figure is the fastest round's per-request time of
each (process CPU time: load from other processes adds little to it) and their difference. It runs twice: in one process's registry, and in prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR set, counters in memory-mapped files), as
`stillhouse api` serves it. Each mode runs in a child process, since prometheus_client
reads the variable once, at import.

With `--http ROUNDS` it then serves the two apps from two uvicorn processes (one
process's registry) and runs `wrk -t2 -c64 -d4s` against each in turn, ROUNDS times,
printing the best and the median requests/s of each: through HTTP on a loaded host the
median swings by half, while the best round is the one the other load disturbed least.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def build(with_metrics: bool) -> Any:
    from fastapi import FastAPI

    from service.telemetry.middleware import HttpMetricsMiddleware

    app = FastAPI()

    @app.get("/v1/jobs/{job_id}")
    async def job(job_id: str) -> dict[str, str]:
        return {"id": job_id, "status": "running"}

    if with_metrics:
        app.add_middleware(HttpMetricsMiddleware)
    return app


def bare_app() -> Any:
    return build(False)


def metered_app() -> Any:
    return build(True)


async def per_request_us(app: Any, requests: int) -> float:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    start = time.process_time()
    for n in range(requests):
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/v1/jobs/{n:08d}",
            "raw_path": f"/v1/jobs/{n:08d}".encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"bench")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, receive, send)
    elapsed = time.process_time() - start
    assert sent[0]["status"] == 200, sent[0]
    return elapsed / requests * 1e6


async def measure(requests: int, rounds: int) -> dict[str, float]:
    bare, metered = build(False), build(True)
    await per_request_us(bare, 500)  # warm both: imports, route compilation, first labels()
    await per_request_us(metered, 500)
    times: dict[str, list[float]] = {"bare": [], "metered": []}
    for _ in range(rounds):
        times["bare"].append(await per_request_us(bare, requests))
        times["metered"].append(await per_request_us(metered, requests))
    # The fastest round of each: on a shared host, load only ever adds time.
    return {name: min(values) for name, values in times.items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def over_http(rounds: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'bench'}"
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    for name in ("bare", "metered"):
        port = free_port()
        argv = [sys.executable, "-m", "uvicorn", f"metrics_overhead:{name}_app", "--factory"]
        argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
        servers[name] = (port, subprocess.Popen(argv, env=env, cwd=ROOT))
    try:
        time.sleep(4)  # both import FastAPI and bind
        rates: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(rounds):
            for name, (port, _) in servers.items():
                url = f"http://127.0.0.1:{port}/v1/jobs/abc"
                out = subprocess.run(
                    ["wrk", "-t2", "-c64", "-d4s", url], capture_output=True, text=True
                )
                found = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
                assert found, out.stdout + out.stderr
                rates[name].append(float(found.group(1)))
    finally:
        for _, process in servers.values():
            process.terminate()
            process.wait()
    print(f"\nHTTP, wrk -t2 -c64 -d4s x {rounds} rounds: requests/s")
    print(f"{'app':<10} {'best':>8} {'median':>8}")
    for name, values in rates.items():
        print(f"{name:<10} {max(values):8.0f} {statistics.median(values):8.0f}")
    ratio = max(rates["metered"]) / max(rates["bare"])
    print(f"best metered / best bare: {ratio:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--http", type=int, default=0, metavar="ROUNDS")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args.requests, args.rounds))))
        return
    argv = [sys.executable, __file__, "--child", "--requests", str(args.requests)]
    argv += ["--rounds", str(args.rounds)]
    print(
        f"{args.requests} requests x {args.rounds} rounds per series; fastest round, µs per request"
    )
    print(f"{'mode':<14} {'bare':>8} {'metered':>8} {'added':>8} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as folder:
        for mode, extra in (
            ("one process", {}),
            ("multiprocess", {"PROMETHEUS_MULTIPROC_DIR": folder}),
        ):
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            out = subprocess.run(argv, env={**env, **extra}, check=True, capture_output=True)
            r = json.loads(out.stdout)
            added = r["metered"] - r["bare"]
            ratio = r["bare"] / r["metered"]
            print(f"{mode:<14} {r['bare']:8.1f} {r['metered']:8.1f} {added:8.1f} {ratio:6.3f}x")
    if args.http:
        over_http(args.http)


if __name__ == "__main__":
    main()
