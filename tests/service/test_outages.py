"""A database outage is a 503 with a sentence and Retry-After on every /v1 route,
never a 500. The app runs against a PostgreSQL URL on a port where nothing
listens: a real refused connection, no mock."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.auth import hash_key
from core.config import Settings

SOME_ID = str(uuid.uuid4())


def _dead_url() -> str:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/stillhouse"


# The catalog of student families and loss terms is code, not rows: past the key check,
# these routes read no database.
CATALOG = {"/v1/students", "/v1/losses"}


def _requests(app: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """One request per operation in the OpenAPI document, with a plausible body."""
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("post", "/v1/models"): {"files": {"file": ("m.onnx", b"onnx")}},
        ("post", "/v1/datasets"): {"files": {"file": ("d.npz", b"npz")}},
        ("post", "/v1/models/{model_id}/predict"): {"json": {"inputs": [[0.0]]}},
        ("post", "/v1/jobs"): {
            "json": {
                "name": "j",
                "teacher_model_id": SOME_ID,
                "student": {"architecture": "mlp"},
                "train_dataset_id": SOME_ID,
                "losses": [{"name": "kd", "weight": 1.0}],
            }
        },
    }
    out = []
    for template, operations in app.openapi()["paths"].items():
        path = template.replace("{model_id}", SOME_ID)
        path = path.replace("{dataset_id}", SOME_ID).replace("{job_id}", SOME_ID)
        for method in operations:
            out.append((method.upper(), path, bodies.get((method, template), {})))
    return out


@pytest.mark.parametrize("key_cached", [False, True], ids=["key-lookup", "cached-key"])
def test_every_route_is_503_while_the_database_is_down(
    settings: Settings, key_cached: bool
) -> None:
    from service.main import create_app

    down = settings.model_copy(update={"database_url": _dead_url()})
    app = create_app(down)
    key = "sh_" + uuid.uuid4().hex
    with TestClient(app, raise_server_exceptions=False) as client:
        if key_cached:  # past the key check: the route's own queries meet the outage
            app.state.stillhouse.keys.put(hash_key(key), str(uuid.uuid4()))
        requests = _requests(app)
        assert len(requests) >= 15
        for method, path, kwargs in requests:
            response = client.request(
                method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs
            )
            if key_cached and path in CATALOG:  # no query behind it: it still answers
                assert response.status_code == 200, (method, path, response.text)
                continue
            assert response.status_code == 503, (method, path, response.text)
            assert response.json()["error"] == "unavailable", (method, path)
            assert "database" in response.json()["detail"]
            assert int(response.headers["Retry-After"]) > 0
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unreachable")
