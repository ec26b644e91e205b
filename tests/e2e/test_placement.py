"""Heterogeneous execution on the real stack: stages placed on two pools served
by two worker processes, `auto` without a GPU worker, a pool nobody serves,
and the report the benchmark stage writes on its own pool."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from examples.digits import DigitsFiles
from tests.conftest import SpawnWorker, npz_bytes, wait_for
from tests.e2e import test_digits_job
from tests.e2e.test_digits_job import FINISHED, job_body

# One tenant for this module and the digits uploaded once: test_digits_job's module-scoped
# fixtures, so this module gets a tenant of its own too.
auth, ids = test_digits_job.auth, test_digits_job.ids

pytestmark = pytest.mark.usefixtures("worker")
SHORT = {"epochs": 5, "batch_size": 64, "lr": 0.003}


def by_name(job: dict) -> dict[str, dict]:
    return {s["name"]: s for s in job["stages"]}


def test_stages_run_on_the_pools_they_are_placed_on_and_the_report_adds_up(
    client: TestClient,
    auth: dict[str, str],
    digits: DigitsFiles,
    ids: dict[str, dict],
    worker,
    spawn_worker: SpawnWorker,
) -> None:
    edge = spawn_worker("edge")
    placement = {"teacher": "cpu", "student": "cpu", "benchmark": "edge"}
    body = job_body(ids, name="two-pools", placement=placement, training=SHORT)
    created = client.post("/v1/jobs", headers=auth, json=body)
    assert created.status_code == 202 and created.json()["warnings"] == []
    job = wait_for(client, f"/v1/jobs/{created.json()['id']}", auth, FINISHED)
    assert job["status"] == "succeeded", job["error"]

    stages = by_name(job)
    for name in ("teacher_inference", "training", "evaluation", "export"):
        assert stages[name]["pool"] == "cpu"
        assert stages[name]["worker_id"].endswith(f"/cpu/cpu/{worker.pid}"), stages[name]
    assert stages["benchmark"]["pool"] == "edge"
    assert stages["benchmark"]["worker_id"].endswith(f"/edge/cpu/{edge.pid}")
    assert {s["device"] for s in job["stages"]} == {"cpu"}
    assert stages["teacher_inference"]["details"]["teacher_outputs"]["train_dataset_id"] in {
        "cache",
        "computed",
    }

    report = client.get(f"/v1/jobs/{job['id']}/report", headers=auth).json()
    teacher, student = report["teacher"], report["student"]
    assert report["benchmark"]["pool"] == "edge" and report["benchmark"]["batch"] == 256
    assert report["benchmark"]["runtime"].startswith("onnxruntime 1.")
    assert report["benchmark"]["threads"] >= 1 and report["benchmark"]["device"] == "cpu"
    assert student["latency_ms"]["p50"] > 0
    assert student["latency_ms"]["p95"] >= student["latency_ms"]["p50"]
    assert student["throughput"]["samples_per_s"] > 0 and student["throughput"]["batch"] == 256
    assert student["eager"]["latency_ms"]["p50"] > 0  # a zoo student runs in torch eager too
    assert teacher["eager"] is None  # an ONNX teacher has no eager form
    assert teacher["agreement"] is None and teacher["kl_to_teacher"] is None
    expected = teacher["latency_ms"]["p50"] / student["latency_ms"]["p50"]
    assert report["speedup"] == pytest.approx(expected, rel=0.01, abs=1e-3)
    assert report["compression"] == pytest.approx(teacher["params"] / student["params"], abs=1e-3)
    assert report["baseline"] is not None and report["baseline"]["latency_ms"]["p50"] > 0
    assert 0 <= report["export"]["parity_max_abs_diff"] <= 1e-4
    assert report["teacher_outputs"] == "cached"
    assert [s["name"] for s in report["stages"]] == [s["name"] for s in job["stages"]]
    assert job["summary"]["speedup"] == report["speedup"]

    # The int8 variant's reported accuracy is what ONNX Runtime scores on the downloaded file.
    int8 = report["student_int8"]
    assert report["quantization"]["kept"] is True, report["quantization"]
    assert report["quantization"]["mode"] == "dynamic" and report["quantization"]["reason"]
    download = client.get(
        f"/v1/models/{job['student_model_id']}/file?format=onnx-int8", headers=auth
    )
    assert download.status_code == 200 and len(download.content) == int8["bytes"]
    session = ort.InferenceSession(download.content, providers=["CPUExecutionProvider"])
    val = np.load(digits.val_npz)
    (logits,) = session.run(None, {session.get_inputs()[0].name: val["x"].astype(np.float32)})
    assert float((logits.argmax(1) == val["y"]).mean()) == pytest.approx(int8["accuracy"], abs=1e-9)
    assert int8["bytes"] < student["bytes"]


def test_auto_is_cpu_without_a_gpu_worker_and_an_empty_pool_warns(
    client: TestClient, auth: dict[str, str], ids: dict[str, dict]
) -> None:
    body = job_body(
        ids,
        name="nobody-benchmarks",
        baseline=False,
        training={"epochs": 1},
        placement={"benchmark": "nowhere"},
    )
    created = client.post("/v1/jobs", headers=auth, json=body)
    assert created.status_code == 202, created.text
    job = created.json()
    assert len(job["warnings"]) == 1
    assert "No live worker serves pool 'nowhere' (placement.benchmark)" in job["warnings"][0]
    assert by_name(job)["teacher_inference"]["pool"] == "cpu"  # auto, and no GPU worker lives

    waiting = wait_for(client, f"/v1/jobs/{job['id']}", auth, {"benchmark"}, field="stage")
    assert by_name(waiting)["benchmark"]["pool"] == "nowhere"
    assert by_name(waiting)["training"]["pool"] == "cpu"
    report = client.get(f"/v1/jobs/{job['id']}/report", headers=auth)
    assert report.status_code == 409 and "stage benchmark" in report.json()["detail"]
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)


def test_batch_inference_logits_are_the_next_jobs_teacher_cache(
    client: TestClient, auth: dict[str, str], digits: DigitsFiles, ids: dict[str, dict]
) -> None:
    # Rows no other test uploads, so no earlier job has cached the teacher's outputs for them.
    rows = {k: v[:400] for k, v in np.load(digits.train_npz).items()}
    uploaded = client.post(
        "/v1/datasets", headers=auth, files={"file": ("part.npz", npz_bytes(**rows))}
    )
    part = wait_for(client, f"/v1/datasets/{uploaded.json()['id']}", auth, {"ready"})
    teacher = ids["teacher"]["id"]
    body = {
        "kind": "inference",
        "name": "label-part",
        "model_id": teacher,
        "dataset_id": part["id"],
    }
    created = client.post("/v1/jobs", headers=auth, json=body)
    assert created.status_code == 202, created.text
    assert created.json()["kind"] == "inference"
    assert [s["name"] for s in created.json()["stages"]] == ["teacher_inference"]
    job = wait_for(client, f"/v1/jobs/{created.json()['id']}", auth, FINISHED)
    assert job["status"] == "succeeded", job["error"]
    assert job["summary"]["logits"]["samples"] == 400
    assert by_name(job)["teacher_inference"]["details"]["teacher_outputs"] == {
        "dataset_id": "computed"
    }

    download = client.get(f"/v1/jobs/{job['id']}/logits", headers=auth)
    assert download.status_code == 200
    logits = np.load(io.BytesIO(download.content), allow_pickle=False)
    session = ort.InferenceSession(str(digits.teacher_onnx), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": rows["x"].astype(np.float32)})[0]
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    assert client.get(f"/v1/jobs/{job['id']}/report", headers=auth).status_code == 409

    # A distillation job on the same teacher and data reads those logits: the teacher does
    # not run again, as its stage says.
    distill = job_body(
        ids,
        name="from-batch",
        baseline=False,
        training={"epochs": 2},
        train_dataset_id=part["id"],
        transfer_dataset_id=None,
        val_dataset_id=None,
        quantization={"mode": "off"},
    )
    second = client.post("/v1/jobs", headers=auth, json=distill).json()
    done = wait_for(client, f"/v1/jobs/{second['id']}", auth, FINISHED)
    assert done["status"] == "succeeded", done["error"]
    sources = by_name(done)["teacher_inference"]["details"]["teacher_outputs"]
    assert sources == {"train_dataset_id": "cache"}
    missing = client.get(f"/v1/jobs/{done['id']}/logits", headers=auth)
    assert missing.status_code == 404 and "batch inference" in missing.json()["detail"]

    # With quantization off there is no int8 variant, and the report says why.
    report = client.get(f"/v1/jobs/{done['id']}/report", headers=auth).json()
    assert report["student_int8"] is None and report["quantization"]["kept"] is False
    assert report["quantization"]["note"] == "Quantization was turned off for this job."
    int8 = client.get(f"/v1/models/{done['student_model_id']}/file?format=onnx-int8", headers=auth)
    assert int8.status_code == 404 and "onnx, safetensors" in int8.json()["detail"]


def test_a_batch_inference_job_checks_its_inputs(
    client: TestClient, auth: dict[str, str], ids: dict[str, dict]
) -> None:
    body = {"kind": "inference", "name": "x", "model_id": ids["teacher"]["id"]}
    missing = client.post("/v1/jobs", headers=auth, json=body)
    assert missing.status_code == 422 and "dataset_id" in missing.json()["detail"]
    stranger = client.post(
        "/v1/jobs", headers=auth, json={**body, "dataset_id": ids["teacher"]["id"]}
    )
    assert stranger.status_code == 422 and "names no dataset" in stranger.json()["detail"]
    unknown = client.post("/v1/jobs", headers=auth, json={**body, "kind": "bogus"})
    assert unknown.status_code == 422 and "kind" in unknown.json()["detail"]
