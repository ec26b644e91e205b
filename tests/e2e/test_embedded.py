"""`stillhouse dev` on embedded defaults (SQLite, filesystem broker, local
files): the same upload-distill-download-predict path, through real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from examples.digits import DigitsFiles
from tests.conftest import ROOT

KEY = "sh_embedded-smoke-test-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[httpx.Client]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STILLHOUSE_")}
    env.update(
        STILLHOUSE_DATA_DIR=str(tmp_path / "var"), STILLHOUSE_PORT=str(port), STILLHOUSE_API_KEY=KEY
    )
    log = open(tmp_path / "dev.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "stillhouse.cli", "dev"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )
    try:
        deadline = time.monotonic() + 90
        while b"API key: " + KEY.encode() not in (tmp_path / "dev.log").read_bytes():
            assert process.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
            time.sleep(0.3)
        yield client
    finally:
        client.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
    assert (tmp_path / "var" / "stillhouse.db").exists()


def _wait(client: httpx.Client, path: str, done: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(path).json()
        if body["status"] in done:
            return body
        time.sleep(0.3)
    raise AssertionError(f"{path} stuck: {body}")


def _upload(client: httpx.Client, kind: str, path: Path) -> dict:
    with open(path, "rb") as handle:
        response = client.post(f"/v1/{kind}", files={"file": (path.name, handle)})
    assert response.status_code == 201, response.text
    return _wait(client, f"/v1/{kind}/{response.json()['id']}", {"ready", "invalid"})


def test_embedded_defaults_distill_end_to_end(
    embedded: httpx.Client, digits: DigitsFiles, tmp_path: Path
) -> None:
    assert embedded.get("/readyz").json()["status"] == "ready"
    # The banner names what the client commands read, and the logs went to files.
    banner = (tmp_path / "dev.log").read_text()
    assert f"export STILLHOUSE_URL={embedded.base_url} STILLHOUSE_KEY={KEY}" in banner
    assert (tmp_path / "var" / "logs" / "worker.log").stat().st_size > 0
    teacher = _upload(embedded, "models", digits.teacher_onnx)
    train = _upload(embedded, "datasets", digits.train_npz)
    val = _upload(embedded, "datasets", digits.val_npz)
    assert (teacher["status"], train["status"], val["status"]) == ("ready", "ready", "ready")
    body = {
        "name": "embedded",
        "teacher_model_id": teacher["id"],
        "student": {"architecture": "cnn1d", "params": {"channels": 8}},
        "train_dataset_id": train["id"],
        "val_dataset_id": val["id"],
        "losses": [
            {"name": "kd", "weight": 0.9, "temperature": 4.0},
            {"name": "ce", "weight": 0.1},
        ],
        "training": {"epochs": 8, "batch_size": 64, "lr": 0.01},
    }
    created = embedded.post("/v1/jobs", json=body)
    assert created.status_code == 202, created.text
    job = _wait(embedded, f"/v1/jobs/{created.json()['id']}", {"succeeded", "failed", "cancelled"})
    assert job["status"] == "succeeded", job["error"]
    onnx_file = embedded.get(
        f"/v1/models/{job['student_model_id']}/file", params={"format": "onnx"}
    )
    assert onnx_file.status_code == 200
    session = ort.InferenceSession(onnx_file.content, providers=["CPUExecutionProvider"])
    data = np.load(digits.val_npz)
    logits = session.run(None, {session.get_inputs()[0].name: data["x"]})[0]
    accuracy = float((logits.argmax(1) == data["y"]).mean())
    assert abs(accuracy - job["summary"]["student"]["accuracy"]) <= 0.005

    # A predict through the filesystem broker and the file reply channel.
    predicted = embedded.post(
        f"/v1/models/{job['student_model_id']}/predict", json={"inputs": data["x"][:8].tolist()}
    )
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["format"] == "onnx"
    assert float(np.abs(np.array(predicted.json()["outputs"]) - logits[:8]).max()) <= 1e-4
    assert predicted.json()["predictions"] == logits[:8].argmax(1).tolist()
    # Quiet: a whole job ran and nothing followed the banner (the worker logged to its file).
    lines = [line for line in (tmp_path / "dev.log").read_text().splitlines() if line.strip()]
    assert "Ctrl-C stops it" in lines[-1], lines[-5:]
