"""Upload rules: what is refused at the door, and what a worker marks invalid."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from tests.conftest import npz_bytes, wait_for


def _zip(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"x")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("filename", "content", "needle"),
    [
        ("model.pkl", b"\x80\x04K\x01.", "Pickle"),
        ("model.pt", _zip(["archive/data.pkl", "archive/version"]), "Pickle"),
        (
            "model.pt",
            _zip(["m/code/__torch__/m.py", "m/constants.pkl", "m/data.pkl"]),
            "TorchScript",
        ),
        ("model.pt2", _zip(["archive_format", "models/m.json"]), "TorchScript"),
        ("model.h5", b"\x89HDF", "cannot read"),
    ],
)
def test_refused_model_formats(
    client: TestClient, auth: dict[str, str], filename: str, content: bytes, needle: str
) -> None:
    response = client.post("/v1/models", headers=auth, files={"file": (filename, content)})
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"
    assert needle in response.json()["detail"]
    assert client.get("/v1/models", headers=auth).json()["items"] == []


def test_empty_file_and_bad_spec_are_422(client: TestClient, auth: dict[str, str]) -> None:
    empty = client.post("/v1/datasets", headers=auth, files={"file": ("e.npz", b"")})
    assert empty.status_code == 422 and "empty" in empty.json()["detail"]
    spec = client.post(
        "/v1/models",
        headers=auth,
        files={"file": ("w.safetensors", b"12345678")},
        data={"spec": '{"architecture": "resnet999", "input_shape": [4], "num_classes": 2}'},
    )
    assert spec.status_code == 422 and "resnet999" in spec.json()["detail"]
    not_json = client.post(
        "/v1/models", headers=auth, files={"file": ("w.safetensors", b"1")}, data={"spec": "{oops"}
    )
    assert not_json.status_code == 422 and "JSON" in not_json.json()["detail"]


def test_oversized_upload_is_413(settings: Settings, auth: dict[str, str]) -> None:
    from service.main import create_app

    small = settings.model_copy(update={"max_upload_bytes": 1000})
    with TestClient(create_app(small)) as client:
        payload = npz_bytes(x=np.zeros((100, 100), np.float32))  # 40 kB, under the envelope slack
        response = client.post("/v1/datasets", headers=auth, files={"file": ("big.npz", payload)})
        assert response.status_code == 413
        assert "1000 bytes" in response.json()["detail"]
        big = b"\0" * (2 * 1024 * 1024)  # past the envelope slack: refused from Content-Length
        response = client.post("/v1/datasets", headers=auth, files={"file": ("big.npz", big)})
        assert response.status_code == 413
        assert client.get("/v1/datasets", headers=auth).json()["items"] == []


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize(
    ("arrays_or_bytes", "needle"),
    [
        (b"PK\x03\x04 this is not really a zip", "npz"),
        ({"y": np.array([1, 2])}, 'named "x"'),
        ({"x": np.array([[1.0, np.nan]], np.float32)}, "NaN"),
        ({"x": np.zeros((3, 2), np.float32), "y": np.array([0, 1])}, "y"),
        ({"x": np.zeros((2, 2), np.float32), "y": np.array([0, -1])}, "negative"),
    ],
)
def test_bad_datasets_become_invalid_with_a_sentence(
    client: TestClient, auth: dict[str, str], arrays_or_bytes: object, needle: str
) -> None:
    content = (
        arrays_or_bytes if isinstance(arrays_or_bytes, bytes) else npz_bytes(**arrays_or_bytes)
    )
    created = client.post("/v1/datasets", headers=auth, files={"file": ("d.npz", content)})
    assert created.status_code == 201
    row = wait_for(client, f"/v1/datasets/{created.json()['id']}", auth, {"ready", "invalid"})
    assert row["status"] == "invalid"
    assert needle.lower() in row["error"].lower(), row["error"]


@pytest.mark.usefixtures("worker")
def test_corrupt_onnx_becomes_invalid(client: TestClient, auth: dict[str, str]) -> None:
    created = client.post("/v1/models", headers=auth, files={"file": ("t.onnx", b"not a graph")})
    assert created.status_code == 201
    row = wait_for(client, f"/v1/models/{created.json()['id']}", auth, {"ready", "invalid"})
    assert row["status"] == "invalid" and "ONNX" in row["error"]


@pytest.mark.usefixtures("worker")
def test_safetensors_zoo_model_is_inspected(
    client: TestClient, auth: dict[str, str], tmp_path
) -> None:
    import torch

    from distill.export import save_student
    from distill.students import build_student

    spec = {"architecture": "mlp", "params": {"hidden": [8]}, "input_shape": [5], "num_classes": 3}
    path = tmp_path / "w.safetensors"
    save_student(build_student("mlp", {"hidden": [8]}, (5,), 3), path, spec)
    with open(path, "rb") as handle:
        created = client.post("/v1/models", headers=auth, files={"file": ("w.safetensors", handle)})
    row = wait_for(client, f"/v1/models/{created.json()['id']}", auth, {"ready", "invalid"})
    assert row["status"] == "ready", row["error"]
    assert row["input_shape"] == [None, 5] and row["output_shape"] == [None, 3]
    assert row["num_params"] == 5 * 8 + 8 + 8 * 3 + 3
    assert torch is not None
