"""How much latency does the service add to a predict, over ONNX Runtime called directly?

    .venv/bin/python bench/predict_latency.py [--requests 300] [--warmup 50] [--pg URL] [--keep]

It builds a private stack: a fresh, migrated PostgreSQL database on the shared server, a
redis-server of its own on a free port, a data folder in a temporary directory, a real
`stillhouse api` process (uvicorn) and one real `stillhouse worker --pool cpu` process. The
digits teacher (examples/digits.py: an MLP 64-256-256-10 exported to ONNX) is uploaded
through the API and inspected by the worker. After `--warmup` rounds, `--requests` rounds
run, each of them, in this order, on one validation row (cycling through the 360 rows):

  (s) service  POST /v1/models/{id}/predict with that one sample, over a keep-alive HTTP
               connection: gateway, the ownership read, the reply channel (Redis), the
               Celery message, the worker's cached ONNX Runtime session, and back;
  (d) direct   InferenceSession.run on the same row, in this process, with a session of
               the same file built with the same options as the worker's (the defaults,
               but no spinning: distill.teachers.session_options);
  (h) floor    GET /healthz on the same connection: HTTP and the client alone;
  (r) refused  a predict with a wrongly shaped sample, answered 422 by the gateway: HTTP,
               the API key (cached), the ownership read and the checks; nothing is sent.

Every service output is checked against the direct one (max abs difference <= 1e-4). It prints
p50 / p90 / p99 / mean of each series in milliseconds, and the service's p50 and p99 minus
the direct call's. The stack is stopped, the database dropped and the folder removed on the
way out (`--keep` keeps the folder, with the API and worker logs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chaos_stack import Client, Database, Fleet, Gateway, say, spawn  # noqa: E402
from core.config import Settings  # noqa: E402
from core.keys import create_key  # noqa: E402
from distill.teachers import session_options  # noqa: E402
from tests.servers import PrivateRedis  # noqa: E402

SERIES = ("service", "direct", "floor", "refused")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build_stack(folder: Path, db: Database, redis: PrivateRedis) -> tuple[dict[str, str], Settings]:
    db.create()
    redis.start()
    settings = Settings(
        data_dir=folder / "data",
        database_url=db.sqlalchemy_url,
        broker_url=redis.url,
        broker_prefix="bench:",
    )
    settings.data_dir.mkdir(parents=True)
    env = {
        **os.environ,
        "STILLHOUSE_DATA_DIR": str(settings.data_dir),
        "STILLHOUSE_DATABASE_URL": settings.database_url,
        "STILLHOUSE_BROKER_URL": settings.broker_url,
        "STILLHOUSE_BROKER_PREFIX": settings.broker_prefix,
    }
    return env, settings


def measure(
    http: httpx.Client, model_id: str, session: ort.InferenceSession, x: np.ndarray, rounds: int
) -> dict[str, list[float]]:
    """Milliseconds per call of each series, `rounds` rounds interleaved."""
    times: dict[str, list[float]] = {name: [] for name in SERIES}
    name = session.get_inputs()[0].name
    path = f"/v1/models/{model_id}/predict"
    wrong = {"inputs": [[0.0] * (x.shape[1] + 1)]}
    for i in range(rounds):
        row = x[i % len(x) : i % len(x) + 1]  # (1, 64)
        body = {"inputs": row.tolist()}
        t0 = time.perf_counter()
        response = http.post(path, json=body)
        t1 = time.perf_counter()
        expected = session.run(None, {name: row})[0]
        t2 = time.perf_counter()
        floor = http.get("/healthz")
        t3 = time.perf_counter()
        refused = http.post(path, json=wrong)
        t4 = time.perf_counter()
        if response.status_code != 200 or floor.status_code != 200 or refused.status_code != 422:
            raise RuntimeError(f"round {i}: {response.status_code} {response.text[:300]}")
        got = np.array(response.json()["outputs"], dtype=np.float32)
        if float(np.abs(got - expected).max()) > 1e-4:
            raise RuntimeError(f"round {i}: the service's outputs differ from ONNX Runtime's")
        for series, seconds in zip(SERIES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            times[series].append(seconds * 1000)
    return times


def report(times: dict[str, list[float]]) -> None:
    print(f"\n{'series':10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for series, values in times.items():
        p50, p90, p99 = (percentile(values, q) for q in (0.5, 0.9, 0.99))
        print(f"{series:10} {p50:8.3f} {p90:8.3f} {p99:8.3f} {statistics.fmean(values):8.3f}")
    service, direct = times["service"], times["direct"]
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        added = percentile(service, q) - percentile(direct, q)
        print(f"service adds {added:.3f} ms at {label} over ONNX Runtime called directly")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "STILLHOUSE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="an admin URL of the PostgreSQL server to create the bench's database on",
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder and its logs")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="stillhouse-predict-bench-"))
    db = Database(args.pg)
    redis = PrivateRedis(folder, lambda a: spawn(a, None, dict(os.environ)))
    gateway: Gateway | None = None
    fleet: Fleet | None = None
    try:
        env, settings = build_stack(folder, db, redis)
        say(f"database {db.name}, redis-server on port {redis.port}, folder {folder}")
        built = subprocess.run(
            [sys.executable, "-m", "examples.digits", str(folder / "digits")],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            raise RuntimeError(f"python -m examples.digits failed:\n{built.stderr[-3000:]}")
        gateway = Gateway(env, folder)
        gateway.start()
        fleet = Fleet(env, folder, db)
        fleet.wait_registered(fleet.start())
        client = Client(gateway.url, create_key(settings, f"bench-{uuid.uuid4().hex[:8]}"))
        model_id = client.upload("models", folder / "digits" / "teacher.onnx", "digits-teacher")
        say(f"API at {gateway.url}, one cpu worker, teacher {model_id} ready")

        session = ort.InferenceSession(
            str(folder / "digits" / "teacher.onnx"),
            session_options(spin=False),  # the worker's options
            providers=["CPUExecutionProvider"],
        )
        x = np.load(folder / "digits" / "val.npz")["x"]
        measure(client.http, model_id, session, x, args.warmup)
        say(f"warmed up ({args.warmup} rounds); measuring {args.requests} rounds")
        before = os.getloadavg()[0]
        times = measure(client.http, model_id, session, x, args.requests)
        report(times)
        # This run keeps about one core busy itself; much more means other work shared the box.
        print(f"1-minute load average: {before:.2f} before, {os.getloadavg()[0]:.2f} after")
        client.close()
        return 0
    finally:
        if fleet is not None:
            fleet.stop_all()
        if gateway is not None:
            gateway.stop()
        redis.stop()
        db.drop()
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
