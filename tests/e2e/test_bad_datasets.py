"""Datasets that once broke inspection, each through the real API and a real
worker: a dtype bomb, samples with no values, no samples, a label past 2^31,
labels that do not match the samples. Each ends `invalid` with a sentence that
says what is wrong, and leaves no inspector process behind. The bomb is cheap
to build: the worker runs with a 1 MB decoded-size limit instead of 2 GiB."""

from __future__ import annotations

import io
import os
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.storage import ArtifactStore
from tests.conftest import new_tenant, npz_bytes, start_worker, stop_worker, wait_for
from tests.stack import inspector_processes, private_stack, sql

LIMIT = 1_000_000


@pytest.fixture(scope="module")
def stack(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, TestClient, subprocess.Popen[bytes]]]:
    from service.main import create_app

    folder = tmp_path_factory.mktemp("bad-datasets")
    with private_stack(settings, folder / "data") as private:
        env = {
            "STILLHOUSE_MAX_DATASET_DECODED_BYTES": str(LIMIT),
            "STILLHOUSE_MAX_ZIP_EXPANDED_BYTES": str(16 * 1024 * 1024),
            # Collect every second, sparing blobs younger than 30 s (this module's uploads).
            "STILLHOUSE_GC_INTERVAL_S": "1",
            "STILLHOUSE_GC_GRACE_S": "30",
        }
        worker = start_worker(private, "cpu", folder / "worker.log", env)
        try:
            with TestClient(create_app(private)) as client:
                yield private, client, worker
        finally:
            stop_worker(worker)


CASES = {
    # 300 kB of uint8 is 1.2 MB as float32: refused from the header, before decoding.
    "dtype bomb": (
        {"x": np.zeros((300, 1000), np.uint8)},
        "take 300000 bytes (293.0 KiB) once decompressed and 1200000 bytes (1.1 MiB) once "
        "converted for training (x as float32), more than this server accepts (1000000 bytes",
    ),
    "samples with no values": (
        {"x": np.zeros((5, 0), np.float32)},
        'The array "x" has shape (5, 0): its samples hold no values',
    ),
    "no samples": ({"x": np.zeros((0, 3), np.float32)}, "N > 0 samples"),
    "label past 2^31": (
        {"x": np.zeros((2, 2), np.float32), "y": np.array([0, 2**31])},
        'The array "y" holds the label 2147483648, but this server accepts at most 1000000',
    ),
    "labels do not match samples": (
        {"x": np.zeros((3, 2), np.float32), "y": np.array([0, 1])},
        'The array "y" has shape (2,) but "x" has 3 samples',
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_dataset_is_invalid_with_a_sentence(
    stack: tuple[Settings, TestClient, subprocess.Popen[bytes]], case: str
) -> None:
    private, client, worker = stack
    arrays, sentence = CASES[case]
    auth = new_tenant(private)
    created = client.post(
        "/v1/datasets", headers=auth, files={"file": ("d.npz", npz_bytes(**arrays))}
    )
    assert created.status_code == 201, created.text
    row = wait_for(client, f"/v1/datasets/{created.json()['id']}", auth, {"ready", "invalid"}, 60)
    assert row["status"] == "invalid"
    assert sentence in row["error"], row["error"]
    assert row["error"].endswith(".")
    assert worker.poll() is None, "the worker survived"
    assert not inspector_processes(private.data_dir)


def _bomb() -> bytes:
    """A small zip that inflates to 3 GiB of zeros as far as its headers declare and
    decompress (stored sizes are rewritten smaller: the header lies)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("a/zeros.png", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(64):  # 64 MiB of zeros, deflated to ~64 kB
                member.write(chunk)
    return buffer.getvalue()


def test_a_zip_bomb_is_refused_before_decompressing(
    stack: tuple[Settings, TestClient, subprocess.Popen[bytes]],
) -> None:
    """64 kB that expand to 64 MiB, at a 16 MiB cap: refused from the declared sizes; the
    cap is enforced on the decompressed stream too (distill.image_zip._read)."""
    private, client, worker = stack
    auth = new_tenant(private)
    created = client.post(
        "/v1/datasets", headers=auth, files={"file": ("b.zip", _bomb())}, data={"image_size": "8"}
    )
    assert created.status_code == 201, created.text
    row = wait_for(client, f"/v1/datasets/{created.json()['id']}", auth, {"ready", "invalid"}, 60)
    assert row["status"] == "invalid", row
    assert "expands to 67108864 bytes, more than this server's limit" in row["error"], row["error"]
    assert worker.poll() is None and not inspector_processes(private.data_dir)


def test_a_refused_final_write_ends_invalid(
    stack: tuple[Settings, TestClient, subprocess.Popen[bytes]],
) -> None:
    """The last line of defence: a finding the database cannot store (a class count past
    its integer range, had the label check let one through) ends `invalid` with a
    sentence, where it used to leave the dataset pending for ever."""
    from core import inspection
    from core.db import make_engine, make_sessionmaker
    from core.models import Dataset
    from core.storage import ArtifactStore
    from workers.context import WorkerContext
    from workers.inspect import _finish

    private, client, _ = stack
    auth = new_tenant(private)
    tenant = sql(private, "SELECT tenant_id FROM api_keys ORDER BY created_at DESC LIMIT 1")[0][0]
    engine = make_engine(private.resolved_database_url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as session:
            row = Dataset(
                tenant_id=tenant,
                name="huge-labels",
                format="npz",
                sha256="0" * 64,
                size_bytes=1,
                storage_key="blobs/00/" + "0" * 64,
            )
            session.add(row)
            session.flush()
            # Claimed here, so the worker's sweeper leaves it to this test.
            claim = inspection.claim(session, Dataset, row.id, 60.0, 2)
        assert claim is not None
        ctx = WorkerContext(
            private, sessions, ArtifactStore(private.resolved_storage_url), "cpu", "cpu", "test"
        )
        _finish(ctx, claim, "dataset", status="ready", num_samples=2, num_classes=2**31)
    finally:
        engine.dispose()
    found = client.get(f"/v1/datasets/{claim.row_id}", headers=auth).json()
    assert found["status"] == "invalid", found
    assert found["error"].startswith(
        "Stillhouse could not record what it found in this dataset (NumericValueOutOfRange)"
    ), found["error"]


def test_an_idle_worker_collects_old_orphans(
    stack: tuple[Settings, TestClient, subprocess.Popen[bytes]],
) -> None:
    """The periodic collection: an unreferenced blob older than the grace period goes,
    and the worker logs what it reclaimed."""
    private, _, worker = stack
    store = ArtifactStore(private.resolved_storage_url)
    orphan = store.put_blob(io.BytesIO(b"an orphan of yesterday " * 10))
    os.utime(Path(store.root) / orphan.key, ns=(1, 1))
    deadline = time.monotonic() + 30
    while store.exists(orphan.key) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not store.exists(orphan.key)
    log = (private.data_dir.parent / "worker.log").read_text()
    assert f"{orphan.size} bytes reclaimed" in log, log[-2000:]
    assert worker.poll() is None
