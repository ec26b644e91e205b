"""How fast does the gateway answer a poll, against a bare FastAPI endpoint in the same process?

    .venv/bin/python bench/polling.py [--duration 8] [--rounds 3] [--connections 64]
                                      [--threads 2] [--jobs 50] [--pg URL] [--keep]

It builds a private stack: a fresh, migrated PostgreSQL database on the shared server, a
redis-server of its own on a free port, and ONE uvicorn process serving the gateway
(service.main.create_app) with benchmark-only routes added to the same app: `GET
/bench/bare`, a constant; `GET /bench/key/{id}`, a constant behind the API key check and the
id's validation; and `POST /bench/status-cache/{on}`, which turns the status cache off and
on. One API key and `--jobs` jobs (each mid-training, with its five stages and the
example spec) are written straight into the database: no worker runs, reads need none.
Then `wrk -t<threads> -c<connections> -d<duration>s --latency` (Debian's `wrk`: `apt-get
install wrk`), over loopback, in turn against:

  bare            GET /bench/bare: HTTP and FastAPI alone (the baseline)
  key check       GET /bench/key/{id}: the baseline plus what every /v1 read pays first
  job             GET /v1/jobs/{id} with the key: the whole job from PostgreSQL
  status          GET /v1/jobs/{id}/status: the record in Redis (one HMGET)
  status, N jobs  the same over all `--jobs` jobs in turn (a wrk Lua script)
  status, no cache  the same with the cache off: every poll reads PostgreSQL (the miss path)
  list            GET /v1/jobs?limit=50 with `--jobs` jobs present

`--rounds` times, interleaved, so that a load that comes and goes on the machine falls on
every endpoint alike. It prints a markdown table of the medians over the rounds:
requests/s, p50, p99, the ratio of requests/s to bare's in the same round, and the gateway's
CPU time per request (from /proc: a figure other processes' load moves far less than a
rate). The stack is stopped, the database dropped and the folder removed on the way out
(`--keep` keeps the folder with the API's log).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi import FastAPI  # noqa: E402
from fastapi.responses import PlainTextResponse  # noqa: E402

from bench.chaos_stack import Database, free_port, say, spawn, stop_process  # noqa: E402
from core import lifecycle, repository  # noqa: E402
from core.auth import hash_key  # noqa: E402
from core.config import Settings, get_settings  # noqa: E402
from core.db import make_engine, make_sessionmaker  # noqa: E402
from core.keys import create_key  # noqa: E402
from core.models import Job, utcnow  # noqa: E402
from core.queues import Stage, StageStatus  # noqa: E402
from service.deps import TenantDep  # noqa: E402
from service.examples import JOB_CREATE  # noqa: E402
from service.schemas import IdPath  # noqa: E402
from tests.servers import PrivateRedis  # noqa: E402

LUA_ROTATE = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
"""


def bench_app() -> FastAPI:
    """The gateway as `stillhouse api` serves it, plus the benchmark's two routes (uvicorn
    --factory). Settings come from the STILLHOUSE_* environment, as the gateway's do."""
    from service.main import create_app

    app = create_app(get_settings())
    saved: dict[str, Any] = {}

    @app.get("/bench/bare", include_in_schema=False)
    async def bare() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/bench/key/{job_id}", include_in_schema=False)
    async def key_check(tenant_id: TenantDep, job_id: IdPath) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.post("/bench/status-cache/{on}", include_in_schema=False)
    async def status_cache(on: int) -> PlainTextResponse:
        state = app.state.stillhouse
        if on:
            state.status = saved.get("status", state.status)
        else:
            saved["status"], state.status = state.status, None
        return PlainTextResponse(str(state.status is not None))

    return app


def seed(settings: Settings, jobs: int) -> tuple[str, list[str]]:
    """An API key and `jobs` running jobs of its tenant (training, epoch 7 of 20)."""
    key = create_key(settings, "polling-bench")
    engine = make_engine(settings.resolved_database_url)
    ids = []
    with make_sessionmaker(engine).begin() as session:
        tenant_id = session.scalar(repository.tenant_id_for_key(hash_key(key)))
        start = utcnow()
        for n in range(jobs):
            at = start + timedelta(milliseconds=n)
            job = Job(
                tenant_id=tenant_id,
                name=f"poll-{n}",
                spec=JOB_CREATE,
                status="running",
                stage=Stage.TRAINING.value,
                progress=0.4,
                epoch=7,
                training_run="student",
                created_at=at,
                started_at=at,
            )
            session.add(job)
            session.flush()
            stages = lifecycle.new_stages(job.id, JOB_CREATE, "cpu")
            for stage in stages[:2]:  # teacher inference done, training running
                done = stage.name != Stage.TRAINING.value
                stage.status = (StageStatus.SUCCEEDED if done else StageStatus.RUNNING).value
                stage.worker_id, stage.device, stage.attempts = "bench/cpu/cpu/1", "cpu", 1
                stage.started_at, stage.heartbeat_at = at, at
                stage.finished_at = at if done else None
            session.add_all(stages)
            ids.append(job.id)
    engine.dispose()
    return key, ids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, key: str, args: argparse.Namespace, script: Path | None) -> dict[str, float]:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    command += ["--latency", "-H", f"Authorization: Bearer {key}"]
    command += ["-s", str(script)] if script is not None else []
    out = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    figures = {"rps": rate}
    for name, q in (("p50", "50%"), ("p99", "99%")):
        found = re.search(rf"^\s+{q}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert found is not None, out
        figures[name] = float(found.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[found.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    figures["errors"] = float(non2xx.group(1)) if non2xx else 0.0
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    folder = Path(tempfile.mkdtemp(prefix="stillhouse-polling-"))
    database, broker, api = Database(args.pg), PrivateRedis(folder), None
    try:
        database.create()
        broker.start()
        settings = Settings(
            data_dir=folder, database_url=database.sqlalchemy_url, broker_url=broker.url
        )
        key, ids = seed(settings, args.jobs)
        port = free_port()
        env = {
            **os.environ,
            "STILLHOUSE_DATA_DIR": str(folder),
            "STILLHOUSE_DATABASE_URL": settings.database_url,
            "STILLHOUSE_BROKER_URL": broker.url,
        }
        api = spawn(
            [sys.executable, "-m", "uvicorn", "bench.polling:bench_app", "--factory"]
            + ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            + ["--no-access-log"],
            folder / "api.log",
            env,
        )
        base = f"http://127.0.0.1:{port}"
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"})
        deadline = time.monotonic() + 60
        while True:
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline or api.poll() is not None:
                    raise RuntimeError((folder / "api.log").read_text()[-3000:]) from None
            time.sleep(0.2)
        for path in (f"/v1/jobs/{ids[0]}", f"/v1/jobs/{ids[0]}/status", "/v1/jobs?limit=50"):
            response = http.get(path)
            assert response.status_code == 200, (path, response.text)
        for job_id in ids:  # the records exist, as after the workers' first commits
            assert http.get(f"/v1/jobs/{job_id}/status").status_code == 200
        script = folder / "rotate.lua"
        script.write_text(LUA_ROTATE % ", ".join(f'"/v1/jobs/{i}/status"' for i in ids))

        n = args.jobs
        endpoints = [
            ("bare FastAPI endpoint (constant)", "/bench/bare", False, True),
            ("the API key check alone (constant)", f"/bench/key/{ids[0]}", False, True),
            ("`GET /v1/jobs/{id}` (PostgreSQL, ORM)", f"/v1/jobs/{ids[0]}", False, True),
            (
                "**`GET /v1/jobs/{id}/status`** (Redis record)",
                f"/v1/jobs/{ids[0]}/status",
                False,
                True,
            ),
            (f"`/status` over {n} jobs in turn (Redis)", "/", True, True),
            (f"`/status` over {n} jobs, cache off (PostgreSQL)", "/", True, False),
            (f"`GET /v1/jobs?limit=50` ({n} jobs)", "/v1/jobs?limit=50", False, True),
        ]
        say(f"{n} jobs; wrk -t{args.threads} -c{args.connections} -d{args.duration}s; "
            f"{args.rounds} rounds")  # fmt: skip
        results: dict[str, list[dict[str, float]]] = {label: [] for label, *_ in endpoints}
        for round_ in range(1, args.rounds + 1):
            for label, path, rotate, cached in endpoints:
                http.post(f"/bench/status-cache/{int(cached)}")
                before = cpu_seconds(api.pid)
                figures = wrk(base + path, key, args, script if rotate else None)
                used = cpu_seconds(api.pid) - before
                figures["cpu_ms"] = used * 1e3 / max(figures["rps"] * args.duration, 1)
                results[label].append(figures)
                bare = results[endpoints[0][0]][-1]["rps"]  # this round's: bare runs first
                figures["ratio"] = figures["rps"] / max(bare, 1e-9)
                say(f"round {round_}: {label}: {figures['rps']:,.0f}/s")
        http.close()

        print()
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, medians of "
            f"{args.rounds} interleaved rounds:"
        )
        print()
        print("| endpoint | requests/s | p50 | p99 | ratio to bare | gateway CPU per request |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, *_ in endpoints:
            runs = results[label]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            ratio = "" if label == endpoints[0][0] else f"{med['ratio']:.2f}x"
            errors = sum(r["errors"] for r in runs)
            flag = f" ({errors:.0f} non-2xx)" if errors else ""
            print(
                f"| {label}{flag} | {med['rps']:,.0f} | {med['p50']:.1f} ms | "
                f"{med['p99']:.1f} ms | {ratio} | {med['cpu_ms']:.2f} ms |"
            )
        return 0
    finally:
        if api is not None:
            stop_process(api)
        broker.stop()
        database.drop()
        if args.keep:
            say(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
