"""The `stillhouse` client commands, run as a user runs them (a subprocess with
STILLHOUSE_URL and STILLHOUSE_KEY set) against a real gateway (`live_api`) and the
session worker: upload, create --watch, report, download, and the exits and messages
of the paths that go wrong. Then the Python client's errors, against the same API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml

from core.config import Settings
from core.storage import blob_key
from examples.digits import DigitsFiles
from stillhouse.client import Client
from stillhouse.errors import AuthError, ConnectionFailed, InvalidRequest, NotFound
from tests.conftest import ROOT, free_port
from tests.onnx_crafted import plain_onnx

pytestmark = pytest.mark.usefixtures("worker")


def key_of(auth: dict[str, str]) -> str:
    return auth["Authorization"].removeprefix("Bearer ")


def run_cli(
    url: str, key: str, *args: Any, stdin: str = "", timeout: float = 180
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STILLHOUSE_")}
    env.update(STILLHOUSE_URL=url, STILLHOUSE_KEY=key)
    return subprocess.run(
        [sys.executable, "-m", "stillhouse.cli", *map(str, args)],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok_json(result: subprocess.CompletedProcess) -> Any:
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def upload_all(url: str, key: str, digits: DigitsFiles) -> dict[str, str]:
    ids = {}
    for kind, name, path in (
        ("models", "teacher", digits.teacher_onnx),
        ("datasets", "train", digits.train_npz),
        ("datasets", "val", digits.val_npz),
    ):
        row = ok_json(run_cli(url, key, kind, "upload", path, "--name", name, "--json"))
        assert row["status"] == "ready" and row["name"] == name, row  # --wait is the default
        ids[name] = row["id"]
    return ids


def test_cli_distills_downloads_and_the_onnx_scores_the_reported_accuracy(
    live_api: str, auth: dict[str, str], digits: DigitsFiles, tmp_path: Path
) -> None:
    key = key_of(auth)
    ids = upload_all(live_api, key, digits)
    spec = {
        "name": "cli-digits",
        "student": {"architecture": "mlp", "params": {"hidden": [32]}},
        "losses": [
            {"name": "kd", "weight": 0.9, "temperature": 4.0},
            {"name": "ce", "weight": 0.1},
        ],
        "training": {"epochs": 3, "batch_size": 64, "lr": 0.003, "seed": 0},
        "baseline": True,
    }
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(spec))
    created = run_cli(
        live_api,
        key,
        *("jobs", "create", "-f", job_file, "--watch"),
        *("--set", f"teacher_model_id={ids['teacher']}"),
        *("--set", f"train_dataset_id={ids['train']}", "--set", f"val_dataset_id={ids['val']}"),
    )
    assert created.returncode == 0, created.stderr + created.stdout
    # Not a terminal: plain lines, one per change, no bar; the outcome last.
    assert "\x1b" not in created.stdout and "━" not in created.stdout
    assert "  running  " in created.stdout, created.stdout
    assert "succeeded; student model" in created.stdout.splitlines()[-1]
    job_id = created.stdout.split()[1]

    job = ok_json(run_cli(live_api, key, "jobs", "show", job_id, "--json"))
    assert job["id"] == job_id and job["status"] == "succeeded"
    assert job["training"] == {"run": "baseline", "epoch": 3, "epochs": 3}
    assert job_id in [j["id"] for j in ok_json(run_cli(live_api, key, "jobs", "list", "--json"))]
    done = ok_json(run_cli(live_api, key, "jobs", "list", "--status", "succeeded", "--json"))
    assert [j["id"] for j in done] == [job_id]
    assert ok_json(run_cli(live_api, key, "jobs", "list", "--status", "failed", "--json")) == []
    listed = ok_json(run_cli(live_api, key, "models", "list", "--json"))
    assert {ids["teacher"], job["student_model_id"]} == {m["id"] for m in listed}

    report = ok_json(run_cli(live_api, key, "jobs", "report", job_id, "--json"))
    assert report["baseline"] is not None and report["teacher"]["accuracy"] > 0.9
    table = run_cli(live_api, key, "jobs", "report", job_id)
    assert table.returncode == 0, table.stderr
    lines = {line.split("  ")[0]: line for line in table.stdout.splitlines()}
    assert f"{report['student']['accuracy']:.2%}" in lines["student (distilled)"]
    assert f"{report['baseline']['accuracy']:.2%}" in lines["baseline (no KD)"]

    target = tmp_path / "student.onnx"
    fetched = run_cli(
        live_api,
        key,
        "models",
        "download",
        job["student_model_id"],
        "--format",
        "onnx",
        "-o",
        target,
    )
    assert fetched.returncode == 0 and str(target) in fetched.stdout, fetched.stderr
    # Scored as workers/stages/evaluation.py scores it: the argmax against the labels.
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    val = np.load(digits.val_npz)
    logits = session.run(None, {session.get_inputs()[0].name: val["x"]})[0]  # (N, 10)
    accuracy = float((logits.argmax(axis=1) == val["y"]).mean())
    assert accuracy == pytest.approx(report["student"]["accuracy"], abs=1e-6)


def test_a_cancelled_job_makes_watch_exit_1_with_its_sentence(
    live_api: str, auth: dict[str, str], digits: DigitsFiles, tmp_path: Path
) -> None:
    key = key_of(auth)
    ids = upload_all(live_api, key, digits)
    spec = {
        "name": "cli-cancelled",
        "teacher_model_id": ids["teacher"],
        "student": {"architecture": "mlp", "params": {"hidden": [8]}},
        "train_dataset_id": ids["train"],
        "losses": [{"name": "kd", "weight": 1.0}],
        "training": {"epochs": 1000, "batch_size": 16},
        "baseline": False,
    }
    (tmp_path / "job.json").write_text(json.dumps(spec))
    job_id = run_cli(live_api, key, "jobs", "create", "-f", tmp_path / "job.json", "-q")
    assert job_id.returncode == 0, job_id.stderr
    job_id_text = job_id.stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STILLHOUSE_")}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "stillhouse.cli", "jobs", "watch", job_id_text],
        env={**env, "STILLHOUSE_URL": live_api, "STILLHOUSE_KEY": key},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with Client(live_api, key) as client:
        deadline = time.monotonic() + 120
        while client.get_job(job_id_text)["epoch"] < 1:
            assert time.monotonic() < deadline and watcher.poll() is None
            time.sleep(0.2)
    cancelled = run_cli(live_api, key, "jobs", "cancel", job_id_text)
    assert cancelled.returncode == 0, cancelled.stderr
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 1, out + err
    assert f"job {job_id_text} cancelled" in err
    assert "training  student epoch" in out  # it showed the run before it ended


def test_a_failed_job_makes_watch_exit_1_with_the_error_sentence(
    live_api: str, auth: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """The teacher's stored file vanishes after its upload: the job fails with a sentence."""
    key = key_of(auth)
    model = onnx.load_from_string(plain_onnx())
    model.producer_name = f"cli-{uuid.uuid4().hex}"  # bytes no other test uploads
    (tmp_path / "t.onnx").write_bytes(model.SerializeToString())
    x = np.random.default_rng().standard_normal((16, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(16) % 2)
    teacher = ok_json(run_cli(live_api, key, "models", "upload", tmp_path / "t.onnx", "--json"))
    data = ok_json(run_cli(live_api, key, "datasets", "upload", tmp_path / "d.npz", "--json"))
    (settings.data_dir / "artifacts" / blob_key(teacher["sha256"])).unlink()
    spec = {
        "name": "cli-failed",
        "teacher_model_id": teacher["id"],
        "student": {"architecture": "mlp", "params": {"hidden": [4]}},
        "train_dataset_id": data["id"],
        "losses": [{"name": "kd", "weight": 1.0}],
        "training": {"epochs": 1, "batch_size": 8},
        "baseline": False,
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    result = run_cli(live_api, key, "jobs", "create", "-f", tmp_path / "job.yaml", "--watch")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed: " in result.stderr and "missing from the artifact store" in result.stderr


def test_bad_keys_files_and_ids_get_a_sentence_and_an_exit_code(
    live_api: str, auth: dict[str, str], tmp_path: Path
) -> None:
    wrong = run_cli(live_api, "sh_not-a-key-anyone-issued-0000", "models", "list")
    assert wrong.returncode == 3 and "the API refused the key" in wrong.stderr, wrong.stderr
    nokey = run_cli(live_api, "", "jobs", "list")
    assert nokey.returncode == 2 and "No API key" in nokey.stderr
    down = run_cli(f"http://127.0.0.1:{free_port()}", key_of(auth), "datasets", "list")
    assert down.returncode == 4 and "Cannot reach Stillhouse at http://127.0.0.1:" in down.stderr
    missing = run_cli(live_api, key_of(auth), "jobs", "show", str(uuid.uuid4()))
    assert missing.returncode == 1 and "No job with id" in missing.stderr, missing.stderr
    (tmp_path / "job.yaml").write_text("name: [unclosed\n")
    bad = run_cli(live_api, key_of(auth), "jobs", "create", "-f", tmp_path / "job.yaml")
    assert bad.returncode == 2 and "is not valid JSON or YAML" in bad.stderr
    invalid = run_cli(live_api, key_of(auth), "jobs", "create", "-f", "-", stdin="name: x\n")
    assert invalid.returncode == 1 and "The request is invalid" in invalid.stderr
    assert "HTTP 422 invalid_request" in invalid.stderr


def test_the_client_raises_the_apis_error_and_detail(
    live_api: str, auth: dict[str, str], tmp_path: Path
) -> None:
    with Client(live_api, key_of(auth)) as client:
        with pytest.raises(NotFound) as missing:
            client.get_model(str(uuid.uuid4()))
        assert missing.value.status == 404 and missing.value.error == "not_found"
        assert (
            "No model with id" in missing.value.detail
            and str(missing.value) == missing.value.detail
        )
        with pytest.raises(InvalidRequest) as invalid:
            client.create_job({"name": "no-teacher"})
        assert invalid.value.status == 422 and invalid.value.error == "invalid_request"
        assert "teacher_model_id" in invalid.value.detail

        # Uploads stream through a counting reader: the callback sees every byte once.
        data = tmp_path / "d.npz"
        np.savez(data, x=np.zeros((2000, 64), np.float32), y=np.zeros(2000, np.int64))
        seen: list[int] = []
        row = client.upload_dataset(
            data, name="counted", progress=lambda sent, _: seen.append(sent)
        )
        assert seen[-1] == data.stat().st_size and seen == sorted(seen) and len(seen) > 2
        assert client.wait_ready("datasets", row["id"])["status"] == "ready"
        assert client.list_datasets()[0]["id"] == row["id"]
        client.delete_dataset(row["id"])
        with pytest.raises(NotFound):
            client.get_dataset(row["id"])
        assert {s["name"] for s in client.students()} >= {"mlp", "cnn1d"}
        assert "kd" in {loss["name"] for loss in client.losses()}
        assert any(w["alive"] for w in client.workers())
    with Client(live_api, "sh_not-a-key-anyone-issued-0000") as stranger:
        with pytest.raises(AuthError) as refused:
            stranger.list_jobs()
        assert refused.value.status == 401 and refused.value.error == "unauthorized"
    with Client(f"http://127.0.0.1:{free_port()}", key_of(auth)) as nowhere:
        with pytest.raises(ConnectionFailed, match="Cannot reach Stillhouse at http://127"):
            nowhere.get_job(str(uuid.uuid4()))
