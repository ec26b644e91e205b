"""Every /v1 route needs a key; a key sees only its own tenant's resources."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from core.config import Settings
from tests.conftest import new_tenant, npz_bytes


def _npz() -> bytes:
    return npz_bytes(x=np.zeros((4, 3), np.float32), y=np.array([0, 1, 0, 1]))


def test_missing_and_wrong_keys_are_401(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer sh_not-a-key"}, {"Authorization": "Basic x"}):
        response = client.get("/v1/jobs", headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body["error"] == "unauthorized" and body["detail"].endswith(".")


def test_tenants_see_only_their_own_resources(client: TestClient, settings: Settings) -> None:
    alice, bob = new_tenant(settings), new_tenant(settings)
    created = client.post("/v1/datasets", headers=alice, files={"file": ("a.npz", _npz())})
    assert created.status_code == 201, created.text
    dataset_id = created.json()["id"]

    assert client.get(f"/v1/datasets/{dataset_id}", headers=alice).status_code == 200
    hidden = client.get(f"/v1/datasets/{dataset_id}", headers=bob)
    assert hidden.status_code == 404 and hidden.json()["error"] == "not_found"
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=bob).status_code == 404
    assert client.get("/v1/datasets", headers=bob).json()["items"] == []
    assert [d["id"] for d in client.get("/v1/datasets", headers=alice).json()["items"]] == [
        dataset_id
    ]
    assert client.get(f"/v1/jobs/{dataset_id}", headers=bob).status_code == 404
    assert client.get(f"/v1/models/{dataset_id}/file", headers=bob).status_code == 404
    # Bob cannot start a job on Alice's data either.
    job = {
        "name": "x",
        "teacher_model_id": "nope",
        "student": {"architecture": "mlp"},
        "train_dataset_id": dataset_id,
        "losses": [{"name": "kd", "weight": 1.0}],
    }
    assert client.post("/v1/jobs", headers=bob, json=job).status_code == 422
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=alice).status_code == 204


def test_lists_are_paginated_newest_first(client: TestClient, auth: dict[str, str]) -> None:
    ids = [
        client.post("/v1/datasets", headers=auth, files={"file": (f"{i}.npz", _npz())}).json()["id"]
        for i in range(5)
    ]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/datasets", headers=auth, params=params).json()
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    bad = client.get("/v1/datasets", headers=auth, params={"cursor": "%%%"})
    assert bad.status_code == 422 and "cursor" in bad.json()["detail"]
