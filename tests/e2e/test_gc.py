"""The blob collector on a real job's store: everything a row records survives
(the uploads, the student's weights and ONNX export, the baseline, the
checkpoints a stage still points at), an orphan and superseded checkpoints are
deleted, and a deleted dataset's file is freed. A private stack (tests/stack.py),
so a collection with no grace period touches no other test's files."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.storage import ArtifactStore
from examples.digits import DigitsFiles
from tests.conftest import ROOT, new_tenant, settings_env, start_worker, stop_worker, wait_for
from tests.e2e.test_digits_job import FINISHED, job_body, upload_digits
from tests.stack import private_stack, sql


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, TestClient]]:
    from service.main import create_app

    with private_stack(settings, tmp_path / "data") as private:
        # A checkpoint every epoch, so the stage leaves superseded ones behind.
        worker = start_worker(
            private, "cpu", tmp_path / "worker.log", {"STILLHOUSE_CHECKPOINT_EVERY_S": "0"}
        )
        try:
            with TestClient(create_app(private)) as client:
                yield private, client
        finally:
            stop_worker(worker)


def gc(private: Settings, *flags: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "stillhouse.cli", "gc", "--grace-seconds", "0", "--json"]
    result = subprocess.run(
        [*command, *flags],
        env=settings_env(private),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def recorded_keys(private: Settings) -> set[str]:
    """Every blob key the rows record, walked by hand (not with core.blobs), so the test
    and the collector check each other."""
    keys = {k for (k,) in sql(private, "SELECT storage_key FROM datasets")}
    for (arrays,) in sql(private, "SELECT arrays FROM datasets WHERE arrays IS NOT NULL"):
        keys |= {arrays[name] for name in ("x", "y") if arrays.get(name)}  # converted arrays
    for (files,) in sql(private, "SELECT files FROM models"):
        keys |= {entry["key"] for entry in files.values()}
    stages = sql(private, "SELECT name, outputs, checkpoint FROM job_stages")
    for name, outputs, checkpoint in stages:
        outputs, checkpoint = outputs or {}, checkpoint or {}
        if name == "training":
            keys |= {outputs[run]["weights"] for run in ("student", "baseline") if outputs[run]}
        if name == "export":
            keys |= {outputs["onnx"], outputs["int8"]["key"]}
            keys |= {outputs["baseline_onnx"]} if outputs["baseline_onnx"] else set()
        for run in checkpoint.values():
            keys |= {run[field] for field in ("key", "weights") if run.get(field)}
    return {k for k in keys if k.startswith("blobs/")}


def test_gc_keeps_every_recorded_blob_and_deletes_the_rest(
    stack: tuple[Settings, TestClient], digits: DigitsFiles
) -> None:
    private, client = stack
    auth = new_tenant(private)
    ids = upload_digits(client, auth, digits)
    training = {"epochs": 3, "batch_size": 64, "lr": 0.003}
    created = client.post("/v1/jobs", headers=auth, json=job_body(ids, training=training))
    job = wait_for(client, f"/v1/jobs/{created.json()['id']}", auth, FINISHED, timeout=120)
    assert job["status"] == "succeeded", job["error"]

    store = ArtifactStore(private.resolved_storage_url)
    orphan = store.put_blob(io.BytesIO(b"no row records this"))
    before = {b.key: b.size for b in store.blobs()}
    recorded = recorded_keys(private)
    assert recorded <= set(before) and orphan.key not in recorded
    # Superseded checkpoints of both runs, and the orphan.
    assert len(before) - len(recorded) >= 3

    dry = gc(private, "--dry-run")
    assert dry["dry_run"] and dry["deleted"] == len(before) - len(recorded)
    assert {b.key for b in store.blobs()} == set(before)

    report = gc(private)
    assert report["deleted"] == len(before) - len(recorded)
    assert report["reclaimed_bytes"] == sum(s for k, s in before.items() if k not in recorded)
    assert report["referenced"] == len(recorded)
    assert {b.key for b in store.blobs()} == recorded

    student = client.get(f"/v1/models/{job['student_model_id']}", headers=auth).json()
    for fmt in ("onnx", "safetensors"):
        download = client.get(f"/v1/models/{student['id']}/file?format={fmt}", headers=auth)
        assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == student["sha256"]

    # A deleted dataset's file and its converted arrays are freed by the next collection,
    # once nothing records them.
    val = ids["val"]
    ((arrays,),) = sql(private, "SELECT arrays FROM datasets WHERE id = %s", val["id"])
    converted = [arrays[name] for name in ("x", "y") if arrays.get(name)]
    assert client.delete(f"/v1/datasets/{val['id']}", headers=auth).status_code == 204
    freed = gc(private)
    expected_bytes = val["size_bytes"] + sum(before[key] for key in converted)
    assert (freed["deleted"], freed["reclaimed_bytes"]) == (1 + len(converted), expected_bytes)
    assert not store.exists(f"blobs/{val['sha256'][:2]}/{val['sha256']}")
