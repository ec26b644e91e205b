"""An inspection is claimed like a job stage: a worker SIGKILLed while it reads
a dataset hands the file to another worker, and a file that kills the
inspector twice ends `invalid` with a sentence instead of being loaded a third
time. Real worker processes on a private stack (see tests/stack.py), with a
short heartbeat timeout so a dead worker is noticed within seconds."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from tests.conftest import new_tenant, npz_bytes, start_worker, stop_worker, wait_for
from tests.stack import inspector_processes, private_stack, sql

FAST = {"heartbeat_timeout_s": 3.0, "worker_heartbeat_s": 0.5, "resend_after_s": 1.0}


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, TestClient]]:
    from service.main import create_app

    with private_stack(settings, tmp_path / "data", **FAST) as private:
        with TestClient(create_app(private)) as client:
            yield private, client


@pytest.fixture
def workers(stack: tuple[Settings, TestClient], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start workers on the private stack, several at once; all are stopped at the end."""
    private, _ = stack
    started: list[Any] = []

    def start(*specs: tuple[str, dict[str, str]]) -> list[Any]:
        def one(spec: tuple[str, dict[str, str]]) -> Any:
            pool, env = spec
            return start_worker(private, pool, tmp_path / f"w{len(started)}-{pool}.log", env)

        with ThreadPoolExecutor(len(specs)) as pool:
            processes = list(pool.map(one, specs))
        started.extend(processes)
        return processes

    yield start
    for process in started:
        stop_worker(process)


def until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def upload(client: TestClient, auth: dict[str, str]) -> str:
    data = npz_bytes(x=np.random.default_rng(0).random((40, 3)), y=np.arange(40) % 4)
    created = client.post("/v1/datasets", headers=auth, files={"file": ("d.npz", data)})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def attempts(private: Settings, dataset_id: str) -> int:
    return int(
        sql(private, "SELECT inspect_attempts FROM datasets WHERE id = %s", dataset_id)[0][0]
    )


def test_worker_killed_mid_inspection_another_finishes(
    stack: tuple[Settings, TestClient], workers: Callable[..., Any]
) -> None:
    private, client = stack
    auth = new_tenant(private)
    (doomed,) = workers(("cpu", {"STILLHOUSE_FAILPOINTS": "inspect_dataset=60"}))
    dataset_id = upload(client, auth)
    until(lambda: attempts(private, dataset_id) == 1, "the first claim")
    until(lambda: inspector_processes(private.data_dir), "the inspector child")
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    # The child dies with its parent: nothing keeps reading the file.
    until(lambda: not inspector_processes(private.data_dir), "the orphan inspector to die", 10)
    workers(("cpu", {}))
    row = wait_for(client, f"/v1/datasets/{dataset_id}", auth, {"ready", "invalid"}, 60)
    assert row["status"] == "ready", row["error"]
    assert row["num_samples"] == 40 and row["num_classes"] == 4
    assert attempts(private, dataset_id) == 2


def test_a_file_that_kills_the_inspector_twice_is_invalid(
    stack: tuple[Settings, TestClient], workers: Callable[..., Any]
) -> None:
    """Two cpu workers that die on this file (as on an out-of-memory kill), and a bystander
    on another pool whose reaper gives up on it; no third inspection is started."""
    private, client = stack
    auth = new_tenant(private)
    kill = {"STILLHOUSE_FAILPOINTS": "inspect_dataset=kill"}
    first, second, _ = workers(("cpu", kill), ("cpu", kill), ("bystander", {}))
    dataset_id = upload(client, auth)
    row = wait_for(client, f"/v1/datasets/{dataset_id}", auth, {"ready", "invalid"}, 60)
    assert row["status"] == "invalid"
    assert row["error"].startswith(
        "The inspector stopped twice while reading this file (it crashed or ran out of memory);"
    ), row["error"]
    assert attempts(private, dataset_id) == 2
    assert first.wait(10) == -signal.SIGKILL and second.wait(10) == -signal.SIGKILL
    assert not inspector_processes(private.data_dir)
