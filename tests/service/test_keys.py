"""`stillhouse keys create|list|revoke`, run as the operator runs them, and what
the API does with a revoked key or a deleted tenant: 401 at once, never 500."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import redirect_stderr, redirect_stdout

import httpx
import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import Connection, delete, text

from core import repository
from core.auth import hash_key
from core.config import Settings, get_settings
from core.db import make_engine, make_sessionmaker
from core.models import Tenant
from stillhouse.cli import main
from tests.conftest import ROOT, npz_bytes, settings_env

JOB = {
    "name": "after-revoke",
    "teacher_model_id": "00000000-0000-0000-0000-000000000000",
    "student": {"architecture": "mlp"},
    "train_dataset_id": "00000000-0000-0000-0000-000000000000",
    "losses": [{"name": "kd", "weight": 1.0}],
}


def keys_cli(
    settings: Settings, *args: str, process: bool = False
) -> subprocess.CompletedProcess[str]:
    """`stillhouse keys ARGS` against the test database: in this process through
    the CLI's main() (fast), or as a real command when `process` is set."""
    if process:
        return subprocess.run(
            [sys.executable, "-m", "stillhouse.cli", "keys", *args],
            env=settings_env(settings),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    env = {k: v for k, v in settings_env(settings).items() if k.startswith("STILLHOUSE_")}
    saved = {k: os.environ.get(k) for k in env}
    out, err = io.StringIO(), io.StringIO()
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["keys", *args])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def _created(settings: Settings, *args: str, process: bool = False) -> tuple[dict[str, str], str]:
    """(auth headers, tenant name) of a key made by `stillhouse keys create`."""
    result = keys_cli(settings, "create", *args, process=process)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("sh_") and "\n" not in key  # the key alone: scripts capture it
    tenant = result.stderr.split("'")[1]
    return {"Authorization": f"Bearer {key}"}, tenant


def _upload(client: TestClient, headers: dict[str, str]) -> httpx.Response:
    data = npz_bytes(x=np.zeros((4, 3), np.float32), y=np.array([0, 1, 0, 1]))
    return client.post("/v1/datasets", headers=headers, files={"file": ("d.npz", data)})


def _listed(settings: Settings, *args: str) -> list[dict[str, str | None]]:
    result = keys_cli(settings, "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_revoked_key_is_refused_on_the_very_next_write(
    client: TestClient, settings: Settings
) -> None:
    headers, tenant = _created(settings, "--name", "ci")
    assert _upload(client, headers).status_code == 201
    assert client.get("/v1/datasets", headers=headers).status_code == 200  # now cached
    prefix = headers["Authorization"].removeprefix("Bearer ")[:10]

    revoked = keys_cli(settings, "revoke", prefix)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout and tenant in revoked.stdout

    upload = _upload(client, headers)
    assert upload.status_code == 401 and upload.json()["error"] == "unauthorized"
    assert "revoked" in upload.json()["detail"]
    job = client.post("/v1/jobs", headers=headers, json=JOB)
    assert job.status_code == 401, job.text

    (row,) = _listed(settings, "--tenant", tenant)
    assert row["prefix"] == prefix and row["name"] == "ci" and row["revoked_at"] is not None
    table = keys_cli(settings, "list", "--tenant", tenant).stdout.splitlines()
    assert table[0].split() == ["PREFIX", "NAME", "TENANT", "CREATED", "REVOKED"]
    assert table[1].split()[:3] == [prefix, "ci", tenant] and table[1].split()[-1] != "-"
    again = keys_cli(settings, "revoke", prefix)
    assert again.returncode == 0 and "already revoked" in again.stdout


def test_revoke_refuses_an_ambiguous_prefix_and_fails_on_no_match(
    client: TestClient, settings: Settings
) -> None:
    headers, _ = _created(settings)
    _created(settings)  # at least two live keys start with "sh_"
    ambiguous = keys_cli(settings, "revoke", "sh_")
    assert ambiguous.returncode == 2 and "matches" in ambiguous.stderr
    assert "longer prefix" in ambiguous.stderr
    missing = keys_cli(settings, "revoke", "zz_nothing")
    assert missing.returncode == 1 and "No API key matches" in missing.stderr
    whole = keys_cli(settings, "revoke", headers["Authorization"].removeprefix("Bearer "))
    assert whole.returncode == 0 and "revoked" in whole.stdout  # the whole key works too
    assert client.post("/v1/jobs", headers=headers, json=JOB).status_code == 401


def test_keys_without_tenant_get_new_tenants_that_cannot_see_each_other(
    client: TestClient, settings: Settings
) -> None:
    (alice, alice_tenant), (bob, bob_tenant) = _created(settings, process=True), _created(settings)
    assert alice_tenant != bob_tenant and alice_tenant.startswith("tenant-")
    dataset = _upload(client, alice).json()["id"]
    assert client.get(f"/v1/datasets/{dataset}", headers=bob).status_code == 404
    assert client.get("/v1/datasets", headers=bob).json()["items"] == []
    assert [d["id"] for d in client.get("/v1/datasets", headers=alice).json()["items"]] == [dataset]
    # --tenant puts a second key into an existing tenant: it sees the same rows.
    carol, carol_tenant = _created(settings, "--tenant", alice_tenant)
    assert carol_tenant == alice_tenant
    assert client.get(f"/v1/datasets/{dataset}", headers=carol).status_code == 200


def test_a_short_chosen_key_is_refused(settings: Settings) -> None:
    result = keys_cli(settings, "create", "--key", "x" * 23)
    assert result.returncode == 2 and result.stdout == ""
    assert "at least 24 characters" in result.stderr
    assert not [k for k in _listed(settings) if k["prefix"] == "x" * 10]
    chosen = "sh_" + "c" * 21  # 24 characters: accepted
    ok = keys_cli(settings, "create", "--key", chosen)
    assert ok.returncode == 0 and ok.stdout.strip() == chosen


def _tenant_id(settings: Settings, headers: dict[str, str]) -> str:
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_sessionmaker(engine)() as session:
            key_hash = hash_key(headers["Authorization"].removeprefix("Bearer "))
            tenant_id = session.scalar(repository.tenant_id_for_key(key_hash))
    finally:
        engine.dispose()
    assert tenant_id is not None
    return str(tenant_id)


def test_a_deleted_tenants_key_gets_401_on_writes(client: TestClient, settings: Settings) -> None:
    headers, _ = _created(settings)
    assert client.get("/v1/models", headers=headers).status_code == 200  # now cached
    engine = make_engine(settings.resolved_database_url)
    with make_sessionmaker(engine).begin() as session:
        session.execute(delete(Tenant).where(Tenant.id == _tenant_id(settings, headers)))
    engine.dispose()
    assert _upload(client, headers).status_code == 401
    assert client.post("/v1/jobs", headers=headers, json=JOB).status_code == 401


def test_tenant_deleted_between_auth_and_insert_is_401_not_500(
    client: TestClient, settings: Settings
) -> None:
    """The tenant's deletion is held open in a transaction: the upload passes
    its key check, then its INSERT waits on the tenant row's lock. Committing
    the deletion makes that INSERT a foreign-key violation, which must be a 401."""
    headers, _ = _created(settings)
    tenant_id = _tenant_id(settings, headers)
    engine = make_engine(settings.resolved_database_url)
    answer: list[httpx.Response] = []
    try:
        with engine.connect() as deleting, engine.connect() as watching:
            transaction = deleting.begin()
            deleting.execute(delete(Tenant).where(Tenant.id == tenant_id))
            upload = threading.Thread(target=lambda: answer.append(_upload(client, headers)))
            upload.start()
            deadline = time.monotonic() + 30
            while not _insert_waits_on_lock(watching) and time.monotonic() < deadline:
                assert upload.is_alive(), answer[0].text if answer else "no answer"
                time.sleep(0.05)
            transaction.commit()
            upload.join(timeout=30)
    finally:
        engine.dispose()
    (response,) = answer
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert "deleted" in response.json()["detail"]


def _insert_waits_on_lock(connection: Connection) -> bool:
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO datasets%'"
    )
    count = connection.execute(query).scalar()
    connection.commit()  # pg_stat_activity is a snapshot per transaction: take a fresh one
    return bool(count)
