"""Every dataset format through the HTTP API and a real worker: upload CSV (labeled, and
unlabeled as a transfer set), Parquet, an image-folder zip and npz; inspect; train a tiny
job on each (all submitted, then waited together); the export's ONNX parity is reported.
Bad files end `invalid` with a sentence and leave no canonical arrays behind."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.config import Settings
from core.storage import ArtifactStore
from examples.digits import DigitsFiles
from tests.conftest import npz_bytes, wait_for
from tests.e2e.test_digits_job import FINISHED

pytestmark = pytest.mark.usefixtures("worker")


def _digits(digits: DigitsFiles, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    with np.load(digits.train_npz) as npz:
        return npz["x"][:n], npz["y"][:n]


def _csv(x: np.ndarray, y: np.ndarray | None) -> bytes:
    header = [f"p{i}" for i in range(x.shape[1])] + (["digit"] if y is not None else [])
    lines = [",".join(header)]
    for i, row in enumerate(x):
        values = [f"{v:.4f}" for v in row] + ([str(int(y[i]))] if y is not None else [])
        lines.append(",".join(values))
    return ("\n".join(lines) + "\n").encode()


def _parquet(x: np.ndarray, y: np.ndarray) -> bytes:
    columns = {f"p{i}": x[:, i] for i in range(x.shape[1])}
    buffer = io.BytesIO()
    pq.write_table(pa.table({**columns, "label": y}), buffer)
    return buffer.getvalue()


def _zip(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, (row, label) in enumerate(zip(x, y, strict=True)):
            image = Image.fromarray((row.reshape(8, 8) * 255).round().astype(np.uint8), "L")
            png = io.BytesIO()
            image.save(png, "PNG")
            archive.writestr(f"digits/{int(label)}/{i:04d}.png", png.getvalue())
    return buffer.getvalue()


def _post(client: TestClient, auth: dict[str, str], name: str, data: bytes, **form: str):
    return client.post("/v1/datasets", headers=auth, files={"file": (name, data)}, data=form)


def _ready(client: TestClient, auth: dict[str, str], name: str, data: bytes, **form: str) -> dict:
    response = _post(client, auth, name, data, **form)
    assert response.status_code == 201, response.text
    row = wait_for(client, f"/v1/datasets/{response.json()['id']}", auth, {"ready", "invalid"})
    assert row["status"] == "ready", row["error"]
    return row


def test_every_format_uploads_trains_and_exports(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles
) -> None:
    x, y = _digits(digits)
    teacher = client.post(
        "/v1/models",
        headers=auth,
        files={"file": ("t.onnx", digits.teacher_onnx.read_bytes())},
    ).json()
    sets = {
        "csv": _ready(client, auth, "d.csv", _csv(x, y), label_column="digit"),
        "parquet": _ready(client, auth, "d.parquet", _parquet(x, y), label_column="label"),
        "image-zip": _ready(client, auth, "d.zip", _zip(x, y), image_size="8"),
        "npz": _ready(client, auth, "d.npz", npz_bytes(x=x, y=y)),
        # Integer x is stored as int64 (token ids); a float student reads it cast to float32.
        "npz-int": _ready(
            client, auth, "i.npz", npz_bytes(x=(x * 16).round().astype(np.int16), y=y)
        ),
    }
    transfer = _ready(client, auth, "u.csv", _csv(x[:50], None))
    assert transfer["labeled"] is False and transfer["format"] == "csv"
    assert transfer["options"] is None and transfer["x_dtype"] == "float32"
    assert sets["csv"]["options"] == {"label_column": "digit"}
    assert sets["image-zip"]["options"] == {"image_size": [8, 8]}
    assert sets["image-zip"]["sample_shape"] == [1, 8, 8]
    assert sets["image-zip"]["classes"] == [str(c) for c in sorted(set(y.tolist()))]
    assert sets["npz-int"]["x_dtype"] == "int64"
    for fmt, row in sets.items():
        assert row["format"] == fmt.removesuffix("-int") and row["num_samples"] == len(x), row
        assert row["num_classes"] == int(y.max()) + 1 and row["labeled"] is True, row
    assert sets["npz"]["x_dtype"] == "float32"
    teacher = wait_for(client, f"/v1/models/{teacher['id']}", auth, {"ready", "invalid"})
    jobs = {}
    for fmt, row in sets.items():
        body = {
            "name": f"on-{fmt}",
            "teacher_model_id": teacher["id"],
            "student": {"architecture": "mlp", "params": {"hidden": [16]}},
            "train_dataset_id": row["id"],
            "losses": [{"name": "kd", "weight": 1.0}, {"name": "ce", "weight": 0.5}],
            "training": {"epochs": 2, "batch_size": 64},
            "baseline": False,
        }
        if fmt == "csv":
            body["transfer_dataset_id"] = transfer["id"]
        response = client.post("/v1/jobs", headers=auth, json=body)
        assert response.status_code == 202, response.text
        jobs[fmt] = response.json()["id"]
    for fmt, job_id in jobs.items():
        job = wait_for(client, f"/v1/jobs/{job_id}", auth, FINISHED, 300)
        assert job["status"] == "succeeded", (fmt, job["error"])
        report = client.get(f"/v1/jobs/{job_id}/report", headers=auth)
        assert report.status_code == 200, report.text
        assert "parity_max_abs_diff" in report.text, (fmt, report.text[:500])


def test_a_field_that_does_not_apply_is_refused(client: TestClient, auth: dict[str, str]) -> None:
    cases = [
        ("d.npz", npz_bytes(x=np.zeros((2, 2), np.float32)), {"label_column": "y"}, "label_column"),
        ("d.csv", b"a,b\n1,2\n", {"image_size": "8"}, "image_size"),
        ("d.zip", b"PK", {}, "image_size"),
        ("d.zip", b"PK", {"image_size": "0x9"}, "out of range"),
        ("d.txt", b"1,2", {}, "cannot read"),
    ]
    for name, data, form, words in cases:
        response = _post(client, auth, name, data, **form)
        assert response.status_code in (415, 422), response.text
        assert words in response.json()["detail"], response.text


def _zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


BAD = {
    "truncated npz": ("d.npz", npz_bytes(x=np.ones((50, 8), np.float32))[:300], {}, "npz"),
    "text column": ("d.csv", b"a,name\n1,cat\n2,dog\n", {}, "column 'name'"),
    "dotdot entry": (
        "d.zip",
        _zip_of({"../evil/0.png": b"x", "a/0.png": b"x"}),
        {"image_size": "8"},
        "points outside the archive",
    ),
    "nan in csv": ("d.csv", b"a,b\n1,nan\n2,3\n", {}, "NaN"),
    "missing label column": ("d.csv", b"a,b\n1,2\n", {"label_column": "y"}, "no column named 'y'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_file_is_invalid_and_leaves_no_arrays(
    client: TestClient, auth: dict[str, str], settings: Settings, case: str
) -> None:
    name, data, form, words = BAD[case]
    store = ArtifactStore(settings.resolved_storage_url)
    before = {blob.key for blob in store.blobs()}
    response = _post(client, auth, name, data, **form)
    assert response.status_code == 201, response.text
    row = wait_for(client, f"/v1/datasets/{response.json()['id']}", auth, {"ready", "invalid"})
    assert row["status"] == "invalid", row
    assert words in row["error"], row["error"]
    assert row["error"].endswith("."), row["error"]
    assert row["x_dtype"] is None
    after = {blob.key for blob in store.blobs()}
    assert after - before <= {f"blobs/{row['sha256'][:2]}/{row['sha256']}"}, after - before


def test_labels_past_the_teachers_classes_are_refused_at_submission(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles
) -> None:
    x, _ = _digits(digits, 12)
    y = np.arange(12)  # labels 0..11 for a 10-class teacher
    data = _ready(client, auth, "wide.csv", _csv(x, y), label_column="digit")
    assert data["num_classes"] == 12
    response = client.post(
        "/v1/models", headers=auth, files={"file": ("t.onnx", digits.teacher_onnx.read_bytes())}
    )
    teacher = wait_for(client, f"/v1/models/{response.json()['id']}", auth, {"ready", "invalid"})
    body = {
        "name": "too-many-classes",
        "teacher_model_id": teacher["id"],
        "student": {"architecture": "mlp", "params": {"hidden": [8]}},
        "train_dataset_id": data["id"],
        "losses": [{"name": "kd", "weight": 1.0}],
        "training": {"epochs": 1},
    }
    response = client.post("/v1/jobs", headers=auth, json=body)
    assert response.status_code == 422, response.text
    assert "The teacher outputs 10 classes but train_dataset" in response.json()["detail"]
    assert "has labels up to 11" in response.json()["detail"]
