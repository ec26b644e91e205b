"""Bad input is answered with a 4xx and a sentence, and leaves nothing behind:
no row for the tenant, no stored blob, no temporary file. NUL bytes (PostgreSQL
refuses them in text) in every place a client can put one, over-long names, a
50 MB JSON body (declared and chunked), an oversize chunked upload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from tests.conftest import npz_bytes

NUL = "\x00"
SOME_ID = "0b0e9d52-5a2d-4c1e-9a57-3c1f0c6f4d11"  # well formed, names nothing
MIB = 1024 * 1024


def _job(**overrides: Any) -> dict[str, Any]:
    body = {
        "name": "j",
        "teacher_model_id": SOME_ID,
        "student": {"architecture": "mlp", "params": {"hidden": [8]}},
        "train_dataset_id": SOME_ID,
        "losses": [{"name": "kd", "weight": 1.0, "temperature": 2.0}],
    }
    return body | overrides


def _npz() -> bytes:
    return npz_bytes(x=np.zeros((4, 2), np.float32))


BOUNDARY = "stillhouse-test-boundary"


def _raw_upload(filename: str, content: bytes) -> dict[str, Any]:
    """A multipart body written byte for byte: httpx would percent-encode a NUL in the
    file name, where curl and other clients send it as is."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return {
        "content": head + content + f"\r\n--{BOUNDARY}--\r\n".encode(),
        "headers": {"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    }


# (case, method, path, request kwargs, status, words the sentence must hold)
CASES: list[tuple[str, str, str, dict[str, Any], int, tuple[str, ...]]] = [
    ("nul in a model file name", "POST", "/v1/models",
     _raw_upload(f"m{NUL}.onnx", b"onnx"), 422, ("file name", "control characters")),
    ("nul in a dataset file name", "POST", "/v1/datasets",
     _raw_upload(f"d{NUL}.npz", _npz()), 422, ("file name", "control characters")),
    ("nul in a dataset name", "POST", "/v1/datasets",
     {"files": {"file": ("d.npz", _npz())}, "data": {"name": f"a{NUL}b"}}, 422,
     ("name", "control characters")),
    ("nul in a model name", "POST", "/v1/models",
     {"files": {"file": ("m.onnx", b"onnx")}, "data": {"name": NUL}}, 422,
     ("name", "control characters")),
    ("nul in a job name", "POST", "/v1/jobs", {"json": _job(name=f"x{NUL}")}, 422,
     ("name", "control characters")),
    ("nul in a teacher id", "POST", "/v1/jobs", {"json": _job(teacher_model_id=NUL)}, 422,
     ("teacher_model_id", "not an id")),
    ("nul in a student model id", "POST", "/v1/jobs",
     {"json": _job(student={"model_id": f"{SOME_ID}{NUL}"})}, 422, ("model_id", "not an id")),
    ("nul in a model path id", "GET", "/v1/models/%00", {}, 404, ("No model", "\\x00")),
    ("nul in a model file path id", "GET", "/v1/models/%00/file", {}, 404, ("No model",)),
    ("nul in a deleted model id", "DELETE", "/v1/models/%00", {}, 404, ("No model",)),
    ("nul in a dataset path id", "GET", "/v1/datasets/%00", {}, 404, ("No dataset",)),
    ("nul in a deleted dataset id", "DELETE", "/v1/datasets/a%00b", {}, 404, ("No dataset",)),
    ("nul in a job path id", "GET", "/v1/jobs/%00", {}, 404, ("No job",)),
    ("nul in a cancelled job id", "POST", "/v1/jobs/%00/cancel", {}, 404, ("No job",)),
    ("nul in a metrics job id", "GET", "/v1/jobs/%00/metrics", {}, 404, ("No job",)),
    ("nul in a cursor", "GET", "/v1/models", {"params": {"cursor": NUL}}, 422, ("cursor",)),
    ("nul in a jobs cursor", "GET", "/v1/jobs", {"params": {"cursor": f"1_{NUL}"}}, 422,
     ("cursor",)),
    ("nul in the metrics name filter", "GET", f"/v1/jobs/{SOME_ID}/metrics",
     {"params": {"name": NUL}}, 422, ("name", "control characters")),
    ("a file name over 255 characters", "POST", "/v1/datasets",
     {"files": {"file": ("d" * 300 + ".npz", _npz())}}, 422, ("304 characters", "255")),
    ("a name over 200 characters", "POST", "/v1/datasets",
     {"files": {"file": ("d.npz", _npz())}, "data": {"name": "n" * 201}}, 422,
     ("name", "200 characters")),
    ("a 50 MB JSON body, declared", "POST", "/v1/jobs",
     {"content": b'{"name": "' + b"a" * (50 * MIB) + b'"}',
      "headers": {"content-type": "application/json"}}, 413,
     (f"{MIB} bytes", "STILLHOUSE_MAX_JSON_BYTES")),
]  # fmt: skip


def _files(store: Path) -> set[Path]:
    return {p for sub in ("blobs", "tmp") for p in (store / sub).rglob("*") if p.is_file()}


def _rows(client: TestClient, auth: dict[str, str]) -> list[Any]:
    return [
        item
        for kind in ("models", "datasets", "jobs")
        for item in client.get(f"/v1/{kind}", headers=auth).json()["items"]
    ]


@pytest.fixture
def gateway(settings: Settings, tmp_path: Path) -> Settings:
    """The shared settings with a data folder of this test's own: the session worker writes
    other tests' converted dataset arrays into the shared store at any time, and "leaves
    nothing" is about what the gateway writes."""
    return settings.model_copy(update={"data_dir": tmp_path / "data"})


@pytest.fixture
def client(gateway: Settings) -> Iterator[TestClient]:
    from service.main import create_app

    with TestClient(create_app(gateway)) as test_client:
        yield test_client


@pytest.fixture
def store(gateway: Settings) -> Path:
    return gateway.data_dir / "artifacts"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_is_refused_and_leaves_nothing(
    client: TestClient,
    auth: dict[str, str],
    store: Path,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    words: tuple[str, ...],
) -> None:
    before = _files(store)
    headers = auth | kwargs.pop("headers", {})
    response = client.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"].endswith("."), body
    for word in words:
        assert word in body["detail"], body["detail"]
    assert _rows(client, auth) == []
    assert _files(store) == before


def _chunks(head: bytes, size: int, tail: bytes) -> Iterator[bytes]:
    # No Content-Length: httpx sends a generator chunked, as curl does with a pipe.
    yield head
    for _ in range(size // MIB):
        yield b"a" * MIB
    yield tail


def test_a_chunked_50_mb_json_body_is_413(
    client: TestClient, auth: dict[str, str], store: Path
) -> None:
    before = _files(store)
    response = client.post(
        "/v1/jobs",
        headers=auth | {"content-type": "application/json"},
        content=_chunks(b'{"name": "', 50 * MIB, b'"}'),
    )
    assert response.status_code == 413, response.text
    assert f"{MIB} bytes" in response.json()["detail"]
    assert _rows(client, auth) == [] and _files(store) == before


def test_a_chunked_upload_over_the_cap_is_413_with_the_cap(
    gateway: Settings, auth: dict[str, str], store: Path
) -> None:
    from service.main import create_app

    raw = _raw_upload("big.npz", b"")
    head, tail = raw["content"].split(b"\r\n\r\n", 1)
    head += b"\r\n\r\n"
    capped = gateway.model_copy(update={"max_upload_bytes": MIB})
    before = _files(store)
    with TestClient(create_app(capped)) as small:
        response = small.post(
            "/v1/datasets",
            headers=auth | raw["headers"],
            content=_chunks(head, 4 * MIB, tail),  # past the cap and the envelope's slack
        )
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "payload_too_large"
        assert f"limit of {MIB} bytes" in response.json()["detail"]
        assert _rows(small, auth) == []
    assert _files(store) == before


def test_unsupported_methods_are_405_with_allow(client: TestClient, auth: dict[str, str]) -> None:
    for method, path, allowed in [
        ("TRACE", "/v1/models", "GET, HEAD, POST"),
        ("PUT", f"/v1/models/{SOME_ID}", "DELETE, GET, HEAD"),
        ("PATCH", "/v1/jobs", "GET, HEAD, POST"),
    ]:
        response = client.request(method, path, headers=auth)
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["allow"] == allowed
        assert response.json()["error"] == "method_not_allowed"


def test_a_long_file_name_is_kept_and_the_derived_name_cut_to_200(
    client: TestClient, auth: dict[str, str]
) -> None:
    filename = "d" * 250 + ".npz"
    response = client.post("/v1/datasets", headers=auth, files={"file": (filename, _npz())})
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == filename
    assert response.json()["name"] == "d" * 200
