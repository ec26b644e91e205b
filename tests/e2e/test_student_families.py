"""Every student family through the HTTP API on tiny data: upload a teacher (built here
with the zoo and exported to ONNX, an int64-input teacher for token ids) and npz data,
submit every job at once, wait, and check the export: parity recorded and small, the
downloaded ONNX runs and gives the student's logits. Plus GET /v1/students and the 422s
of bad params."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from catalog.students import FAMILIES
from distill.export import export_onnx
from distill.students import build_student
from tests.conftest import wait_for
from tests.e2e.test_digits_job import FINISHED, upload

pytestmark = pytest.mark.usefixtures("worker")
CLASSES = 3
VOCAB = 20
# name -> (sample shape, integer token ids?)
DATA: dict[str, tuple[tuple[int, ...], bool]] = {
    "flat": ((16,), False),
    "image": ((1, 8, 8), False),
    "sequence": ((12, 3), False),
    "tokens": ((12,), True),
}
# (architecture, params, data)
JOBS: list[tuple[str, dict[str, Any], str]] = [
    ("mlp", {"hidden": [8]}, "flat"),
    ("cnn1d", {"channels": 4}, "flat"),
    ("cnn2d", {"channels": [4, 8]}, "image"),
    ("gru", {"hidden": 8}, "sequence"),
    ("transformer", {"d_model": 8, "heads": 2, "layers": 1, "ff": 16}, "sequence"),
    ("gru", {"hidden": 8, "vocab_size": VOCAB, "embed_dim": 4, "bidirectional": True}, "tokens"),
    (
        "transformer",
        {"d_model": 8, "heads": 2, "layers": 1, "ff": 16, "vocab_size": VOCAB},
        "tokens",
    ),
]


def _rows(name: str, n: int, seed: int) -> np.ndarray:
    shape, tokens = DATA[name]
    rng = np.random.default_rng(seed)
    if tokens:
        return rng.integers(0, VOCAB, size=(n, *shape), dtype=np.int64)
    return rng.standard_normal((n, *shape)).astype(np.float32)


def _teacher(tmp_path: Path, name: str) -> Path:
    """A zoo model exported to ONNX: an mlp for floats, a token transformer (int64 input)."""
    shape, tokens = DATA[name]
    arch, params = (
        ("transformer", {"d_model": 8, "heads": 2, "vocab_size": VOCAB})
        if tokens
        else ("mlp", {"hidden": [16]})
    )
    model = build_student(arch, params, shape, CLASSES).eval()
    path = tmp_path / f"teacher-{name}.onnx"
    export_onnx(model, shape, path)
    return path


def _npz(tmp_path: Path, name: str, split: str, seed: int) -> Path:
    x = _rows(name, 48, seed)
    y = np.random.default_rng(seed + 1).integers(0, CLASSES, size=len(x))
    path = tmp_path / f"{name}-{split}.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def uploads(client: TestClient, tmp_path_factory: pytest.TempPathFactory, settings) -> dict:
    from tests.conftest import new_tenant

    auth = new_tenant(settings)
    tmp = tmp_path_factory.mktemp("families")
    out: dict[str, Any] = {"auth": auth}
    for seed, name in enumerate(DATA):
        out[name] = {
            "teacher": upload(client, auth, "models", _teacher(tmp, name), name=f"t-{name}"),
            "train": upload(
                client, auth, "datasets", _npz(tmp, name, "train", 10 * seed), name=name
            ),
            "val": upload(
                client, auth, "datasets", _npz(tmp, name, "val", 10 * seed + 5), name=name
            ),
        }
        for row in out[name].values():
            assert row["status"] == "ready", row["error"]
    return out


def _body(ids: dict, arch: str, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"{arch}-family",
        "teacher_model_id": ids["teacher"]["id"],
        "student": {"architecture": arch, "params": params},
        "train_dataset_id": ids["train"]["id"],
        "val_dataset_id": ids["val"]["id"],
        "losses": [
            {"name": "kd", "weight": 0.9, "temperature": 2.0},
            {"name": "ce", "weight": 0.1},
        ],
        "training": {"epochs": 2, "batch_size": 16, "lr": 0.003, "seed": 0},
    }


def test_every_family_trains_exports_and_runs(client: TestClient, uploads: dict) -> None:
    auth = uploads["auth"]
    assert uploads["tokens"]["teacher"]["input_shape"] == [None, 12]  # an int64-input teacher
    submitted = []
    for arch, params, data in JOBS:  # all at once, waited together
        response = client.post("/v1/jobs", headers=auth, json=_body(uploads[data], arch, params))
        assert response.status_code == 202, response.text
        submitted.append((arch, params, data, response.json()["id"]))
    served: list[tuple[str, np.ndarray, np.ndarray]] = []  # (model id, rows, ONNX logits)
    for arch, params, data, job_id in submitted:
        job = wait_for(client, f"/v1/jobs/{job_id}", auth, FINISHED, timeout=300)
        assert job["status"] == "succeeded", (arch, params, job["error"])
        report = client.get(f"/v1/jobs/{job_id}/report", headers=auth).json()
        parity = report["export"]["parity_max_abs_diff"]
        assert 0 <= parity < 1e-4, (arch, params, parity)
        onnx_file = client.get(
            f"/v1/models/{job['student_model_id']}/file?format=onnx", headers=auth
        )
        assert onnx_file.status_code == 200
        session = ort.InferenceSession(onnx_file.content, providers=["CPUExecutionProvider"])
        x = _rows(data, 5, seed=99)
        expected_type = "tensor(int64)" if DATA[data][1] else "tensor(float)"
        assert session.get_inputs()[0].type == expected_type, arch
        (logits,) = session.run(None, {session.get_inputs()[0].name: x})
        assert logits.shape == (5, CLASSES) and np.isfinite(logits).all()
        served.append((job["student_model_id"], x, logits))
    # The served students take the same rows (integers for a token student); asked once
    # every job is done, so the worker is free to answer.
    for model_id, x, logits in served:
        answer = client.post(
            f"/v1/models/{model_id}/predict", headers=auth, json={"inputs": x.tolist()}
        )
        assert answer.status_code == 200, answer.text
        assert np.abs(np.array(answer.json()["outputs"]) - logits).max() < 1e-4
        if x.dtype == np.int64:  # a token student refuses fractional ids at the gateway
            floats = (x + 0.5).tolist()
            answer = client.post(
                f"/v1/models/{model_id}/predict", headers=auth, json={"inputs": floats}
            )
            assert answer.status_code == 422 and "token ids" in answer.json()["detail"]


def test_get_students_lists_every_family(client: TestClient, auth: dict[str, str]) -> None:
    assert client.get("/v1/students").status_code == 401
    response = client.get("/v1/students", headers=auth)
    assert response.status_code == 200, response.text
    items = {item["name"]: item for item in response.json()["items"]}
    assert set(items) == set(FAMILIES)
    gru = items["gru"]
    assert gru["defaults"] == {
        "vocab_size": None,
        "hidden": 64,
        "layers": 1,
        "bidirectional": False,
        "embed_dim": 32,
    }
    assert gru["feature_layers"] == ["features", "sequence"] and gru["inputs"] == "float or tokens"
    assert items["cnn2d"]["defaults"] == {"channels": [16, 32], "blocks": 1}
    assert items["mlp"]["feature_layers"] == ["hidden"]
    transformer = items["transformer"]["params_schema"]
    assert transformer["additionalProperties"] is False
    assert {"d_model", "heads", "layers", "ff", "vocab_size", "embed_dim", "max_len"} <= set(
        transformer["properties"]
    )
    openapi = client.get("/openapi.json").json()
    schema = openapi["paths"]["/v1/students"]["get"]["responses"]["200"]["content"]
    assert schema["application/json"]["schema"]["$ref"].endswith("StudentFamilyList")


@pytest.mark.parametrize(
    ("arch", "params", "data", "fragments"),
    [
        (
            "transformer",
            {"d_model": 10, "heads": 4},
            "sequence",
            ["student.params.heads", "d_model (10) must be divisible by heads (4)"],
        ),
        (
            "gru",
            {"hiden": 8},
            "sequence",
            ["student.params.hiden", "unknown parameter 'hiden'", "hidden, layers, bidirectional"],
        ),
        ("cnn2d", {"channels": [4, "8"]}, "image", ["student.params.channels.1"]),
        ("transformer", {}, "image", ["'transformer' takes sequences of shape (T, F) or (T,)"]),
        ("cnn2d", {}, "flat", ["'cnn2d' takes image samples", "(C, H, W)"]),
        ("gru", {"vocab_size": 5}, "sequence", ["reads (T,) token ids"]),
        ("transformer", {"max_len": 4}, "sequence", ["max_len is 4"]),
    ],
)
def test_bad_params_are_422_at_submission(
    client: TestClient, uploads: dict, arch: str, params: dict, data: str, fragments: list[str]
) -> None:
    auth = uploads["auth"]
    before = client.get("/v1/jobs", headers=auth).json()
    response = client.post("/v1/jobs", headers=auth, json=_body(uploads[data], arch, params))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    for fragment in fragments:
        assert fragment in detail, detail
    assert client.get("/v1/jobs", headers=auth).json() == before  # nothing was created
