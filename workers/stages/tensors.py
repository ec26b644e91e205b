"""The teacher's intermediate tensors a job's feature losses read: computed once per
(teacher, dataset, tensor name) as extra ONNX graph outputs and cached beside the logits."""

from __future__ import annotations

import hashlib

import numpy as np

from core.models import Dataset, Model
from core.spec import JobCreate
from distill.errors import DistillError
from distill.teachers import OnnxTeacher
from workers.context import WorkerContext
from workers.jobs import StopCheck
from workers.stages.inputs import load_arrays, logits_key, save_logits

CHUNK = 8192  # samples per teacher call between two cancel checks


def job_tensors(spec: JobCreate) -> tuple[str, ...]:
    """The teacher tensor names the job's weighted loss terms read, in order, once each."""
    names = [getattr(t, "teacher_tensor", None) for t in spec.tensor_terms]
    return tuple(dict.fromkeys(n for n in names if n is not None))


def tensor_key(teacher_sha256: str, dataset_sha256: str, name: str) -> str:
    """Beside the logits (inputs.logits_key); the name is hashed, as ONNX names hold '/'."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    return f"cache/teacher-logits/{teacher_sha256}/{dataset_sha256}/tensors/{digest}.npy"


def cache_tensors(
    ctx: WorkerContext,
    check: StopCheck,
    teacher_row: Model,
    datasets: dict[str, Dataset],
    names: tuple[str, ...],
) -> tuple[dict[str, dict[str, str]], set[str]]:
    """{dataset field: {tensor name: cache key}}, computing the tensors not cached yet, and
    the fields whose logits the same pass computed and cached (the teacher runs once)."""
    keys: dict[str, dict[str, str]] = {}
    with_logits: set[str] = set()
    for field, dataset in datasets.items():
        keys[field] = {n: tensor_key(teacher_row.sha256, dataset.sha256, n) for n in names}
        missing = tuple(n for n in names if not ctx.store.exists(keys[field][n]))
        if not missing:
            continue
        if teacher_row.format != "onnx":
            raise DistillError(
                f"Teacher tensors come from ONNX teachers only, but this teacher is "
                f"{teacher_row.format}; export it to ONNX or drop the feature loss."
            )
        path = ctx.store.local_path(teacher_row.files["onnx"]["key"])
        teacher = OnnxTeacher(path, device=ctx.device, tensors=missing)
        x, _ = load_arrays(ctx.store, dataset)
        parts: dict[str, list[np.ndarray]] = {n: [] for n in missing}
        logits: list[np.ndarray] = []
        for start in range(0, len(x), CHUNK):
            batch_logits, arrays = teacher.predict_tensors(x[start : start + CHUNK])
            logits.append(batch_logits)  # (b, C)
            for name, array in arrays.items():
                parts[name].append(array)
            if check():
                check.raise_if_stopped()
        for name in missing:
            array = np.concatenate(parts[name])  # (N, ...)
            if not np.isfinite(array).all():
                raise DistillError(
                    f"The teacher tensor {name!r} holds NaN or infinite values on "
                    f"{field.removesuffix('_id')}; check the model and the data's scaling."
                )
            save_logits(ctx.store, keys[field][name], array)
        key = logits_key(teacher_row.sha256, dataset.sha256)
        all_logits = np.concatenate(logits)  # (N, C)
        width = (teacher_row.output_shape or [None])[-1]
        if not ctx.store.exists(key) and all_logits.shape[1] == width:
            if np.isfinite(all_logits).all():  # else the logits pass says why, with a sentence
                save_logits(ctx.store, key, all_logits)
                with_logits.add(field)
    return keys, with_logits
