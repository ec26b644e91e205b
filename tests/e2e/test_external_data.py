"""An ONNX upload that names external data cannot read another tenant's blob,
and cannot tell whether a blob exists: both are refused with one sentence."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.storage import blob_key
from tests.conftest import new_tenant, npz_bytes, wait_for
from tests.onnx_crafted import external_data_onnx, external_data_onnx_beside

pytestmark = pytest.mark.usefixtures("worker")


def test_external_data_onnx_cannot_read_or_probe_another_tenants_blob(
    client: TestClient, settings: Settings
) -> None:
    alice, bob = new_tenant(settings), new_tenant(settings)
    data = npz_bytes(x=np.arange(400, dtype=np.float32).reshape(100, 4), y=np.arange(100) % 2)
    dataset = client.post("/v1/datasets", headers=alice, files={"file": ("train.npz", data)})
    assert dataset.status_code == 201, dataset.text
    target = dataset.json()["sha256"]
    assert (settings.data_dir / "artifacts" / blob_key(target)).exists()

    crafted = {
        "existing": external_data_onnx_beside(target),
        "missing": external_data_onnx("0" * 64),
    }
    errors = {}
    for label, content in crafted.items():
        created = client.post("/v1/models", headers=bob, files={"file": (f"{label}.onnx", content)})
        assert created.status_code == 201, created.text
        model = wait_for(client, f"/v1/models/{created.json()['id']}", bob, {"ready", "invalid"})
        assert model["status"] == "invalid", model
        assert model["num_params"] is None and model["input_shape"] is None
        errors[label] = model["error"]
    # The same sentence whether the named file exists or not: no oracle.
    assert errors["existing"] == errors["missing"]
    assert "external data" in errors["existing"]
    assert "save_as_external_data=False" in errors["existing"]
