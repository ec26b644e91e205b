"""POST /v1/models/{id}/predict on the real stack: PostgreSQL, Redis, a worker
process. Outputs are checked against ONNX Runtime (and torch, for a zoo
safetensors model) run here on the very file the server holds."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import redis
import torch
from fastapi.testclient import TestClient
from onnx import numpy_helper

from core.broker import make_celery
from core.config import Settings
from core.dispatch import predict_message, send
from core.storage import blob_key
from examples.digits import DigitsFiles
from service.main import create_app
from tests.conftest import REDIS_URL, new_tenant, wait_for
from tests.e2e.test_digits_job import upload
from tests.e2e.test_zoo_models import upload_zoo
from tests.onnx_crafted import matmul_model, plain_onnx
from tests.stack import private_stack

pytestmark = pytest.mark.usefixtures("worker")
SPEC = {"architecture": "mlp", "params": {"hidden": [24]}, "input_shape": [64], "num_classes": 10}


@pytest.fixture
def teacher(client: TestClient, auth: dict[str, str], digits: DigitsFiles) -> dict:
    row = upload(client, auth, "models", digits.teacher_onnx, name="digits-teacher")
    assert row["status"] == "ready", row["error"]
    return row


def rows(digits: DigitsFiles, n: int = 8) -> np.ndarray:
    return np.load(digits.val_npz)["x"][:n]  # (n, 64) float32


def predict(client: TestClient, auth: dict[str, str], model_id: str, **body: object):
    return client.post(f"/v1/models/{model_id}/predict", headers=auth, json=body)


def loads(worker_log: Path, sha256: str) -> int:
    """How often the session worker has loaded this file for a predict."""
    return worker_log.read_text().count(f"predict: loaded onnx model {sha256[:12]}")


def test_onnx_outputs_match_onnx_runtime_on_the_same_file(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles, teacher: dict, data_dir: Path
) -> None:
    x = rows(digits)
    before = loads(data_dir / "worker.log", teacher["sha256"])
    response = predict(client, auth, teacher["id"], inputs=x.tolist())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_id"], body["format"], body["pool"]) == (teacher["id"], "onnx", "cpu")
    assert "/cpu/cpu/" in body["worker_id"]

    onnx_file = client.get(f"/v1/models/{teacher['id']}/file?format=onnx", headers=auth)
    session = ort.InferenceSession(onnx_file.content, providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]  # (8, 10)
    outputs = np.array(body["outputs"], dtype=np.float32)
    assert outputs.shape == (8, 10)
    assert float(np.abs(outputs - expected).max()) <= 1e-4
    assert body["predictions"] == expected.argmax(1).tolist()

    again = predict(client, auth, teacher["id"], inputs=x[:1].tolist(), pool="auto")
    assert again.status_code == 200, again.text
    assert again.json()["pool"] == "cpu"  # no gpu worker is alive
    assert again.json()["predictions"] == body["predictions"][:1]
    # The second predict ran on the session the first one loaded (at most one load, none
    # when an earlier test of this run had already loaded the file).
    assert loads(data_dir / "worker.log", teacher["sha256"]) - before <= 1


def test_a_zoo_safetensors_model_runs_in_torch(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles, tmp_path: Path
) -> None:
    model, zoo = upload_zoo(client, auth, tmp_path, "zoo")

    x = rows(digits)
    response = predict(client, auth, zoo["id"], inputs=x.tolist())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["format"] == "safetensors"  # the model has no onnx file
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    assert float(np.abs(np.array(body["outputs"]) - expected).max()) <= 1e-4
    assert body["predictions"] == expected.argmax(1).tolist()

    missing = predict(client, auth, zoo["id"], inputs=x.tolist(), format="onnx")
    assert missing.status_code == 404
    assert missing.json()["detail"] == (
        f"Model '{zoo['id']}' has no onnx file; available: safetensors."
    )


def test_a_fixed_batch_model_takes_any_number_of_samples(
    client: TestClient, auth: dict[str, str]
) -> None:
    """plain_onnx takes exactly one (1, 4) sample per run: y = x @ ones(4, 2)."""
    created = client.post("/v1/models", headers=auth, files={"file": ("m.onnx", plain_onnx())})
    row = wait_for(client, f"/v1/models/{created.json()['id']}", auth, {"ready", "invalid"})
    assert row["status"] == "ready" and row["input_shape"] == [1, 4], row
    inputs = [[1, 2, 3, 4], [0, 0, 0, 0.5], [-1, 1, -1, 1]]
    response = predict(client, auth, row["id"], inputs=inputs)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == [[10.0, 10.0], [0.5, 0.5], [0.0, 0.0]]
    assert response.json()["predictions"] == [0, 0, 0]


def test_inputs_that_do_not_fit_are_refused_before_anything_is_sent(
    client: TestClient, auth: dict[str, str], teacher: dict, settings: Settings
) -> None:
    pool = f"shape-check-{uuid.uuid4().hex[:6]}"  # a queue no test sends to otherwise
    cases = {
        "short": ([[0.0] * 63], "inputs[0] has shape [63] but model '{id}' takes [64] per sample."),
        "nested": ([[[0.0] * 64]], "inputs[0] has shape [1, 64] but model '{id}' takes [64]"),
        "second": ([[0.0] * 64, [0.0] * 65], "inputs[1] has shape [65]"),
        "ragged": ([[[0.0], [0.0, 1.0]]], "inputs[0] is not a nested list of finite numbers"),
        "text": ([["x"] * 64], "inputs[0] is not a nested list of finite numbers"),
    }
    for name, (inputs, sentence) in cases.items():
        response = predict(client, auth, teacher["id"], inputs=inputs, pool=pool)
        assert response.status_code == 422, (name, response.text)
        assert response.json()["error"] == "invalid_request"
        assert sentence.format(id=teacher["id"]) in response.json()["detail"], name
    empty = predict(client, auth, teacher["id"], inputs=[], pool=pool)
    assert empty.status_code == 422 and "inputs" in empty.json()["detail"]
    # Nothing reached the broker: no queue for the pool, no request waiting.
    broker = redis.Redis.from_url(REDIS_URL)
    assert broker.exists(f"{settings.broker_prefix}{pool}") == 0
    assert list(broker.scan_iter(f"{settings.broker_prefix}stillhouse:predict:*")) == []


def test_more_samples_than_the_server_takes_are_refused(
    settings: Settings, teacher: dict, auth: dict[str, str]
) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_predict_samples": 4}))) as small:
        response = predict(small, auth, teacher["id"], inputs=[[0.0] * 64] * 5)
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "inputs holds 5 samples but a predict takes at most 4 (STILLHOUSE_MAX_PREDICT_SAMPLES); "
        "send fewer per request."
    )


def test_unknown_and_foreign_models_are_404(
    client: TestClient, auth: dict[str, str], teacher: dict, settings: Settings
) -> None:
    inputs = [[0.0] * 64]
    foreign = predict(client, new_tenant(settings), teacher["id"], inputs=inputs)
    unknown = predict(client, auth, str(uuid.uuid4()), inputs=inputs)
    for response in (foreign, unknown):
        assert response.status_code == 404, response.text
        assert re.fullmatch(
            r"No model with id '.+' exists for this API key\.", response.json()["detail"]
        )


def test_pending_and_invalid_models_are_409(
    client: TestClient, auth: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    garbage = client.post("/v1/models", headers=auth, files={"file": ("bad.onnx", b"not onnx")})
    invalid = wait_for(client, f"/v1/models/{garbage.json()['id']}", auth, {"ready", "invalid"})
    response = predict(client, auth, invalid["id"], inputs=[[0.0]])
    assert response.status_code == 409
    assert response.json()["detail"].startswith(
        f"Model '{invalid['id']}' is invalid and cannot serve predictions: "
    )
    # A stack of its own with no worker: the upload stays pending.
    with private_stack(settings, tmp_path / "data") as private:
        with TestClient(create_app(private)) as own:
            headers = new_tenant(private)
            created = own.post(
                "/v1/models", headers=headers, files={"file": ("m.onnx", plain_onnx())}
            )
            pending = predict(own, headers, created.json()["id"], inputs=[[0.0] * 4])
    assert pending.status_code == 409
    assert pending.json() == {
        "error": "conflict",
        "detail": f"Model '{created.json()['id']}' is still being inspected; retry when its "
        "status is 'ready'.",
    }


def test_a_pool_without_workers_times_out_with_504(
    client: TestClient, auth: dict[str, str], teacher: dict, settings: Settings
) -> None:
    asked = time.monotonic()
    response = predict(
        client, auth, teacher["id"], inputs=[[0.0] * 64], pool="nowhere", timeout_s=1
    )
    waited = time.monotonic() - asked
    assert response.status_code == 504, response.text
    assert response.json() == {
        "error": "timeout",
        "detail": "No worker of pool 'nowhere' answered within 1 s; start a worker for that "
        "pool, or retry with a longer timeout_s (a worker runs one task at a time, so a predict "
        "waits behind a training stage running on it).",
    }
    # timeout_s was honoured, not the 30 s default (a bound on behaviour, not on speed).
    assert waited < 20
    broker = redis.Redis.from_url(REDIS_URL)
    assert list(broker.scan_iter(f"{settings.broker_prefix}stillhouse:predict:*")) == []


def test_outputs_the_model_cannot_produce_are_a_422_from_the_worker(
    client: TestClient, auth: dict[str, str], teacher: dict
) -> None:
    """Finite inputs whose outputs overflow float32: the worker answers with a sentence."""
    response = predict(client, auth, teacher["id"], inputs=[[3.0e38] * 64])
    assert response.status_code == 422, response.text
    assert response.json() == {
        "error": "invalid_request",
        "detail": "The model produced NaN or infinite outputs on these inputs; check that "
        "they are preprocessed the way the model expects.",
    }


def test_a_torch_program_is_not_servable(
    auth: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    net = torch.nn.Linear(4, 2)
    program = torch.export.export(
        net, (torch.zeros(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    path = tmp_path / "linear.pt2"
    torch.export.save(program, path)
    with TestClient(create_app(settings.model_copy(update={"allow_torch_programs": True}))) as own:
        row = upload(own, auth, "models", path)
        assert row["status"] == "ready", row["error"]
        response = predict(own, auth, row["id"], inputs=[[0.0] * 4])
    assert response.status_code == 422
    assert response.json()["detail"] == (
        f"Model '{row['id']}' is a torch_export program, which predict does not serve; upload "
        "it exported to ONNX (or as safetensors with a zoo spec) to predict with it."
    )


def test_an_unreachable_broker_is_a_503(
    client: TestClient, auth: dict[str, str], teacher: dict, settings: Settings
) -> None:
    dead = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(dead)) as cut_off:
        response = predict(cut_off, auth, teacher["id"], inputs=[[0.0] * 64])
    assert response.status_code == 503
    assert response.json() == {
        "error": "unavailable",
        "detail": "Stillhouse cannot reach its broker right now; retry in a few seconds.",
    }
    assert int(response.headers["Retry-After"]) > 0


def test_late_and_orphaned_messages_are_dropped_unrun(
    client: TestClient, auth: dict[str, str], teacher: dict, settings: Settings, data_dir: Path
) -> None:
    """A message past its deadline is discarded by Celery (`expires`); one whose request is
    gone (answered, or given up by the gateway) is dropped by the task. The worker goes on."""
    expired, orphaned = str(uuid.uuid4()), str(uuid.uuid4())
    celery = make_celery(settings)
    now = time.time()
    assert send(celery, predict_message(expired, "cpu", datetime.fromtimestamp(now - 5, UTC)))
    assert send(celery, predict_message(orphaned, "cpu", datetime.fromtimestamp(now + 30, UTC)))
    # Behind them in the queue: once this is answered, both have been taken.
    response = predict(client, auth, teacher["id"], inputs=[[0.0] * 64])
    assert response.status_code == 200, response.text
    log = (data_dir / "worker.log").read_text()
    assert f"predict {orphaned}: the request is gone (answered or given up); dropped" in log
    assert f"['{expired}'] started" not in log


def test_a_ready_model_whose_file_is_gone_is_a_502(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    """The worker cannot load it: the server's fault, not the request's."""
    weight = numpy_helper.from_array(np.ones((4, 2), np.float32), "W")
    content = matmul_model(weight, doc=uuid.uuid4().hex).SerializeToString()  # a file of its own
    created = client.post("/v1/models", headers=auth, files={"file": ("m.onnx", content)})
    row = wait_for(client, f"/v1/models/{created.json()['id']}", auth, {"ready", "invalid"})
    assert row["status"] == "ready", row["error"]
    (settings.data_dir / "artifacts" / blob_key(row["sha256"])).unlink()
    response = predict(client, auth, row["id"], inputs=[[0.0] * 4])
    assert response.status_code == 502
    assert response.json() == {
        "error": "worker_failed",
        "detail": "The model file is missing from the artifact store.",
    }
