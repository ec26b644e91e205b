"""Example requests and responses for the OpenAPI document (/docs shows them beside each
operation). They describe one story: a 64-channel cnn1d teacher distilled into an
8-channel student on MNIST-1D, with a no-KD baseline of the same size.

tests/service/test_openapi_examples.py validates every one against the schema it
illustrates, so an example cannot drift from the API it documents."""

from __future__ import annotations

from typing import Any

from catalog.losses import describe
from catalog.students import FAMILIES
from core.config import Settings
from service.catalog.students import StudentFamilyPublic
from service.uploads import body_too_large_sentence, too_large_sentence

TEACHER_ID = "8c2f7d1e-4b3a-4f6e-9d21-5a7b0c3e9f14"
STUDENT_ID = "e5a91b7c-2d4f-4e8a-b3c6-71f0d92a4e58"
TRAIN_ID = "1d7e3a9b-6c2f-4a81-8e5d-3b9f0c7a2e61"
TRANSFER_ID = "6b0e4c8a-3f7d-4d2b-a9e1-0c5f8b3d7a24"
VAL_ID = "a4c8e2f6-9b1d-4e3a-8f7c-5d2b6e0a9c13"
JOB_ID = "3f1c9a52-8d0e-4b7a-9c61-2e5d4f7a8b90"
WORKER_ID = "0f3d8b6a-7e2c-4a9d-b1f5-c84e2a6d9b37"
SHA256 = "9f2b6c1d0e8a7f3b5c4d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b"

JOB_CREATE = {
    "name": "cnn8-from-cnn64",
    "teacher_model_id": TEACHER_ID,
    "student": {"architecture": "cnn1d", "params": {"channels": 8}},
    "train_dataset_id": TRAIN_ID,
    "transfer_dataset_id": TRANSFER_ID,
    "val_dataset_id": VAL_ID,
    "losses": [
        {"name": "kd", "weight": 0.9, "temperature": 4.0},
        {"name": "ce", "weight": 0.1},
    ],
    "training": {"epochs": 20, "batch_size": 256, "lr": 0.003, "optimizer": "adam", "seed": 0},
    "placement": {"teacher": "auto", "student": "auto", "benchmark": "cpu"},
    "baseline": True,
}

# POST /v1/jobs: named examples (Swagger UI offers them in a list).
JOB_CREATE_EXAMPLES: dict[str, dict[str, Any]] = {
    "distill": {
        "summary": "Distil a zoo student, with a no-KD baseline",
        "description": "Soft targets from the teacher on an unlabeled transfer set (`kd`), "
        "plus the few ground-truth labels of the train set (`ce`).",
        "value": JOB_CREATE,
    },
    "from_uploaded_student": {
        "summary": "Start the student from uploaded weights",
        "value": {
            "name": "finetune-student",
            "teacher_model_id": TEACHER_ID,
            "student": {"model_id": STUDENT_ID},
            "train_dataset_id": TRANSFER_ID,
            "losses": [{"name": "kd", "weight": 1.0, "temperature": 2.0}],
            "training": {"epochs": 5, "lr": 0.001},
        },
    },
    "inference": {
        "summary": "Batch inference: one model over one dataset",
        "description": "The logits are a download (/v1/jobs/{job_id}/logits), and the teacher "
        "output cache of later distillation jobs on the same model and data.",
        "value": {
            "kind": "inference",
            "name": "teacher-logits",
            "model_id": TEACHER_ID,
            "dataset_id": TRANSFER_ID,
        },
    },
}

# The 413 sentences at the default limits: a JSON body, and an upload.
BODY_TOO_LARGE = body_too_large_sentence(Settings.model_fields["max_json_bytes"].default)
UPLOAD_TOO_LARGE = too_large_sentence(Settings.model_fields["max_upload_bytes"].default)

# POST /v1/models `spec`: what rebuilds uploaded safetensors weights.
ZOO_SPEC = {
    "architecture": "mlp",
    "params": {"hidden": [64]},
    "input_shape": [40],
    "num_classes": 10,
}

MODEL = {
    "id": TEACHER_ID,
    "name": "teacher-cnn64",
    "status": "ready",
    "error": None,
    "format": "onnx",
    "formats": ["onnx"],
    "filename": "teacher-cnn64.onnx",
    "sha256": SHA256,
    "size_bytes": 412_736,
    "spec": None,
    "input_shape": [None, 40],
    "output_shape": [None, 10],
    "num_params": 102_986,
    "tensors": [{"name": "/features/features.2/Relu_output_0", "shape": [64, 40]}],
    "source_job_id": None,
    "created_at": "2026-11-29T09:12:03.418Z",
    "updated_at": "2026-11-29T09:12:04.902Z",
}

DATASET = {
    "id": TRANSFER_ID,
    "name": "mnist1d-transfer",
    "status": "ready",
    "error": None,
    "format": "npz",
    "filename": "mnist1d-transfer.npz",
    "sha256": SHA256,
    "size_bytes": 3_200_512,
    "num_samples": 20_000,
    "sample_shape": [40],
    "num_classes": None,
    "labeled": False,
    "options": None,
    "x_dtype": "float32",
    "classes": None,
    "created_at": "2026-11-29T09:12:05.120Z",
    "updated_at": "2026-11-29T09:12:06.377Z",
}


def _stage(name: str, status: str, pool: str | None, started: str | None) -> dict[str, Any]:
    done = status == "succeeded"
    return {
        "name": name,
        "status": status,
        "pool": pool,
        "worker_id": WORKER_ID if started else None,
        "device": "cpu" if started else None,
        "attempts": 1 if started else 0,
        "started_at": started,
        "finished_at": "2026-11-29T09:13:41.004Z" if done else None,
        "details": {"teacher_outputs": {"train_dataset_id": "run"}}
        if name.startswith("t") and done
        else None,
    }


JOB = {
    "id": JOB_ID,
    "kind": "distill",
    "name": "cnn8-from-cnn64",
    "status": "running",
    "stage": "training",
    "progress": 0.62,
    "epoch": 20,
    "training": {"run": "baseline", "epoch": 4, "epochs": 20},
    "error": None,
    "attempt": 1,
    "cancel_requested": False,
    "student_model_id": None,
    "summary": None,
    "warnings": [],
    "spec": JOB_CREATE,
    "stages": [
        _stage("teacher_inference", "succeeded", "cpu", "2026-11-29T09:13:40.211Z"),
        {
            **_stage("training", "running", "cpu", "2026-11-29T09:13:41.120Z"),
            "resumed_from_epoch": 0,
        },
        _stage("evaluation", "pending", None, None),
        _stage("benchmark", "pending", None, None),
        _stage("export", "pending", None, None),
    ],
    "created_at": "2026-11-29T09:13:39.872Z",
    "started_at": "2026-11-29T09:13:40.211Z",
    "finished_at": None,
    "updated_at": "2026-11-29T09:15:02.530Z",
    "heartbeat_at": "2026-11-29T09:15:02.530Z",
}

# GET /v1/jobs/{id}/status: the job less spec and summary; stages without their details.
JOB_STATUS = {
    **{k: v for k, v in JOB.items() if k not in ("spec", "summary")},
    "stages": [
        {k: v for k, v in stage.items() if k not in ("details", "resumed_from_epoch")}
        for stage in JOB["stages"]  # type: ignore[attr-defined]
    ],
}

METRICS = [
    {"step": 79, "epoch": 1, "name": "train_loss", "value": 1.482},
    {"step": 79, "epoch": 1, "name": "val_accuracy", "value": 0.612},
    {"step": 79, "epoch": 1, "name": "baseline_val_accuracy", "value": 0.414},
]


def _entry(
    accuracy: float, agreement: float | None, params: int, size: int, p50: float
) -> dict[str, Any]:
    return {
        "accuracy": accuracy,
        "agreement": agreement,
        "kl_to_teacher": None if agreement is None else round(0.05 + (1 - agreement), 3),
        "ece": 0.031,
        "params": params,
        "bytes": size,
        "latency_ms": {"p50": p50, "p95": round(p50 * 1.3, 3), "batch": 1},
        "throughput": {"samples_per_s": round(256_000 / (p50 * 60), 1), "batch": 256},
        "eager": None,
    }


REPORT = {
    "teacher": _entry(0.962, None, 102_986, 412_736, 0.412),
    "student": {
        **_entry(0.917, 0.931, 3_466, 15_120, 0.061),
        "selected": {"epoch": 18, "by": "accuracy", "note": None},
        "last_epoch": {"epoch": 20, "accuracy": 0.914, "agreement": 0.928, "kl": 0.21},
        "epochs_run": 20,
    },
    "baseline": {**_entry(0.846, 0.858, 3_466, 15_120, 0.061), "epochs_run": 20},
    "student_int8": _entry(0.915, 0.929, 3_466, 6_988, 0.058),
    "speedup": 6.75,
    "compression": 29.71,
    "benchmark": {
        "pool": "cpu",
        "device": "cpu",
        "device_name": "AMD EPYC 7B13",
        "threads": 2,
        "runtime": "onnxruntime 1.23.2",
        "versions": {"onnxruntime": "1.23.2", "torch": "2.13.0"},
        "batch": 256,
    },
    "export": {"parity_max_abs_diff": 2.4e-06},
    "quantization": {"mode": "dynamic", "reason": "no GPU pool", "kept": True, "note": None},
    "teacher_outputs": "cached",
    "task": "classification",
    "stages": [],
}

WORKER = {
    "id": WORKER_ID,
    "hostname": "worker-cpu-1",
    "pool": "cpu",
    "device": "cpu",
    "device_name": "AMD EPYC 7B13",
    "memory_bytes": 25_769_803_776,
    "versions": {"python": "3.11.2", "torch": "2.13.0", "onnxruntime": "1.23.2"},
    "current_job_id": JOB_ID,
    "started_at": "2026-11-29T09:00:00.000Z",
    "last_heartbeat": "2026-11-29T09:15:01.000Z",
    "alive": True,
}

PREDICT_REQUEST = {"inputs": [[0.0] * 40], "pool": "cpu", "timeout_s": 30}

PREDICT_RESPONSE = {
    "outputs": [[-1.2, 0.3, 4.8, -0.7, 0.1, -2.2, 0.4, -0.9, 1.1, -0.5]],
    "predictions": [2],
    "model_id": TEACHER_ID,
    "format": "onnx",
    "pool": "cpu",
    "worker_id": WORKER_ID,
}


def schema_examples() -> dict[str, list[Any]]:
    """The examples of the document's component schemas, by schema name. service.docs sets
    them on the built document: FastAPI writes it with exclude_none, which would drop every
    null from an example declared on the model itself."""
    return {
        "ModelPublic": [MODEL],
        "DatasetPublic": [DATASET],
        "JobPublic": [JOB],
        "JobStatusPublic": [JOB_STATUS],
        "MetricPoint": METRICS,
        "JobReport": [REPORT],
        "WorkerPublic": [WORKER],
        "PredictRequest": [PREDICT_REQUEST],
        "PredictResponse": [PREDICT_RESPONSE],
        # The catalog's own entries, so these cannot drift from it.
        "LossList": [{"items": describe()[:1]}],
        "StudentFamilyList": [
            {"items": [StudentFamilyPublic.of(FAMILIES["mlp"]).model_dump(mode="json")]}
        ],
    }
