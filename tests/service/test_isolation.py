"""No tenant sees or changes another's data: every operation of the OpenAPI
document, called with a foreign tenant's ids, answers 404 (or, where an id
travels in a body, refuses it as unknown), and the owner's rows are the same
afterwards. The walk is driven by the document, so a route added later is
walked too."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from examples.digits import DigitsFiles
from tests.conftest import new_tenant
from tests.e2e.test_digits_job import job_body, upload_digits

pytestmark = pytest.mark.usefixtures("worker")
# A pool nobody serves: the owner's job stays queued, so nothing about it moves by itself.
NOWHERE = {
    "teacher": "unserved",
    "student": "unserved",
    "export": "unserved",
    "benchmark": "unserved",
}
# Bodies that are valid for the owner, for the by-id operations that need one: the stranger
# must meet the 404, not a 422 for a missing body.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/models/{model_id}/predict"): {"inputs": [[0.0] * 64], "timeout_s": 5},
}


def _snapshot(client: TestClient, auth: dict[str, str], ids: dict[str, str]) -> dict[str, Any]:
    seen = {}
    for kind, resource_id in ids.items():
        response = client.get(f"/v1/{kind}s/{resource_id}", headers=auth)
        assert response.status_code == 200, response.text
        seen[kind] = response.json()
    return seen


def _listed_ids(client: TestClient, auth: dict[str, str], path: str, **query: str) -> set[str]:
    response = client.get(path, headers=auth, params=query)
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def test_a_foreign_tenant_gets_404_on_every_route_and_changes_nothing(
    client: TestClient, settings: Settings, digits: DigitsFiles
) -> None:
    owner, stranger = new_tenant(settings), new_tenant(settings)
    uploaded = upload_digits(client, owner, digits)
    created = client.post(
        "/v1/jobs", headers=owner, json=job_body(uploaded, name="private", placement=NOWHERE)
    )
    assert created.status_code == 202, created.text
    ids = {
        "model": uploaded["teacher"]["id"],
        "dataset": uploaded["train"]["id"],
        "job": created.json()["id"],
    }
    before = _snapshot(client, owner, ids)

    walked = 0
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for method in operations:
            params = [
                p["name"] for p in operations[method].get("parameters", []) if p["in"] == "path"
            ]
            if not params:
                continue
            url = path
            for name in params:  # model_id -> the owner's model, and so on
                url = url.replace("{" + name + "}", ids[name.removesuffix("_id")])
            body = BODIES.get((method, path))
            response = client.request(method.upper(), url, headers=stranger, json=body)
            assert response.status_code == 404, (method, url, response.text)
            assert response.json()["error"] == "not_found", response.text
            walked += 1
    assert walked >= 8  # every by-id operation of models, datasets and jobs

    # Ids in a body: the owner's teacher and data are unknown to the stranger.
    foreign_job = client.post("/v1/jobs", headers=stranger, json=job_body(uploaded))
    assert foreign_job.status_code == 422, foreign_job.text
    assert ids["model"] in foreign_job.json()["detail"]

    # Lists show only the stranger's own rows, also when handed the owner's cursor.
    for kind in ("models", "datasets", "jobs"):
        assert _listed_ids(client, stranger, f"/v1/{kind}") == set()
    page = client.get("/v1/datasets", headers=owner, params={"limit": 1}).json()
    assert page["next_cursor"], page  # the owner has three datasets
    assert _listed_ids(client, stranger, "/v1/datasets", cursor=page["next_cursor"]) == set()
    workers = client.get("/v1/workers", headers=stranger).json()
    assert ids["job"] not in {w["current_job_id"] for w in workers}

    assert _snapshot(client, owner, ids) == before
    downloaded = client.get(f"/v1/models/{ids['model']}/file", headers=owner)
    assert (
        downloaded.status_code == 200 and len(downloaded.content) == before["model"]["size_bytes"]
    )
    client.post(f"/v1/jobs/{ids['job']}/cancel", headers=owner)  # leave no queued job behind
