"""Loading what a job names: its spec, rows, arrays, the teacher outputs the
first stage recorded, and the weights the training stage recorded."""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session
from torch import nn

from core.lifecycle import Claim
from core.models import Dataset, Model
from core.queues import Stage
from core.spec import DATASET_FIELDS, JobCreate
from core.storage import ArtifactStore
from distill.batches import Rows
from distill.data import load_npz
from distill.errors import DistillError
from distill.export import load_student, save_student
from workers.context import WorkerContext
from workers.retry import read

log = logging.getLogger("stillhouse.worker")
HOLDOUT_FRACTION = 0.1  # of the train set, when the job names no validation set


@dataclass(frozen=True)
class JobInputs:
    spec: JobCreate
    teacher: Model
    datasets: dict[str, Dataset]  # keyed by the spec field that names it


@dataclass(frozen=True)
class SplitData:
    """Training and validation arrays; unlabeled rows carry label -1."""

    x: np.ndarray | Rows  # (N, ...); Rows (read per batch) above the in-memory threshold
    y: np.ndarray  # (N,)
    t: np.ndarray | Rows | None  # (N, C) teacher logits; None with online teacher outputs
    x_val: np.ndarray | Rows  # (M, ...)
    y_val: np.ndarray | None  # (M,)
    t_val: np.ndarray  # (M, C)
    val_source: str
    # The teacher tensors feature losses read, {name: (N, ...)}, row-aligned with x.
    features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def load_inputs(ctx: WorkerContext, raw_spec: dict[str, object]) -> JobInputs:
    spec = JobCreate.model_validate(raw_spec)
    return read(ctx, "reading the job's inputs", lambda session: _rows(session, spec))


def _rows(session: Session, spec: JobCreate) -> JobInputs:
    """The job's rows, detached from the session (a missing one fails the job)."""
    teacher = session.get(Model, spec.teacher_model_id)
    if teacher is None:
        raise DistillError("The teacher model was deleted while the job waited; resubmit the job.")
    datasets = {}
    for field in DATASET_FIELDS:
        dataset_id = getattr(spec, field)
        if dataset_id is not None:
            row = session.get(Dataset, dataset_id)
            if row is None:
                raise DistillError(
                    f"Dataset '{dataset_id}' was deleted while the job waited; resubmit the job."
                )
            datasets[field] = row
    session.expunge_all()
    return JobInputs(spec=spec, teacher=teacher, datasets=datasets)


def cached_fields(inputs: JobInputs) -> list[str]:
    """The datasets whose teacher outputs the job caches: all of them for cached teacher
    outputs; online, only what evaluation reads, the validation set or else the train set
    (its holdout is the validation set)."""
    if inputs.spec.teacher_outputs == "cached":
        return list(inputs.datasets)
    return ["val_dataset_id" if "val_dataset_id" in inputs.datasets else "train_dataset_id"]


def logits_key(teacher_sha256: str, dataset_sha256: str) -> str:
    """Teacher outputs depend only on the two files, so ten jobs on one teacher share them."""
    return f"cache/teacher-logits/{teacher_sha256}/{dataset_sha256}/logits.npy"


def load_arrays(store: ArtifactStore, dataset: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    """The dataset's canonical arrays, memory-mapped: x (N, ...) float32 or int64 (token
    ids; a float model casts where it reads them), y (N,) int64 or None. A dataset uploaded
    before the canonical arrays existed is read from its .npz."""
    arrays = dataset.arrays
    if not arrays:
        return load_npz(store.local_path(dataset.storage_key))
    x = _mapped(store, arrays["x"])
    y = _mapped(store, arrays["y"]) if arrays.get("y") else None
    return x, y


def load_rows(store: ArtifactStore, dataset: Dataset) -> tuple[Rows, np.ndarray | None]:
    """x as `Rows` (read by explicit reads: memory follows the batch, not the file), y in
    memory (8 bytes a row)."""
    x, y = load_arrays(store, dataset)
    rows = Rows.of(store.local_path(dataset.arrays["x"])) if dataset.arrays else Rows.of(x)
    return rows, None if y is None else np.asarray(y)


def _mapped(store: ArtifactStore, key: str) -> np.ndarray:
    if not store.exists(key):
        raise DistillError(
            "The dataset's converted arrays are missing from the artifact store (was it "
            "cleared?); upload the dataset again."
        )
    return np.load(store.local_path(key), mmap_mode="r", allow_pickle=False)


def streams(settings_max: int, inputs: JobInputs) -> bool:
    """Whether the job's training data is larger than the in-memory threshold (bytes of
    x as stored, train and transfer sets together): then it streams from the files."""
    total = 0
    for field in ("train_dataset_id", "transfer_dataset_id"):
        dataset = inputs.datasets.get(field)
        if dataset is not None and dataset.num_samples is not None:
            itemsize = 8 if (dataset.arrays or {}).get("x_dtype") == "int64" else 4
            total += dataset.num_samples * math.prod(dataset.sample_shape or [1]) * itemsize
    return total > settings_max


def save_logits(store: ArtifactStore, key: str, logits: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "logits.npy"
        np.save(path, logits)
        store.put_named(key, path)


def _logits_path(store: ArtifactStore, claim: Claim, field: str) -> Path:
    key = claim.inputs.get(Stage.TEACHER_INFERENCE.value, {}).get("logits", {}).get(field)
    if key is None or not store.exists(key):
        raise DistillError(
            "The teacher's outputs for this dataset are missing from the artifact store "
            "(was the cache cleared?); resubmit the job to run the teacher again."
        )
    return store.local_path(key)


def load_logits(store: ArtifactStore, claim: Claim, field: str) -> np.ndarray:
    return np.load(_logits_path(store, claim, field), mmap_mode="r", allow_pickle=False)


def load_tensors(store: ArtifactStore, claim: Claim, field: str) -> dict[str, np.ndarray]:
    """The cached teacher tensors of one dataset field, {name: (N, ...)}; {} when none."""
    stage = claim.inputs.get(Stage.TEACHER_INFERENCE.value, {})
    out: dict[str, np.ndarray] = {}
    for name, key in (stage.get("tensors") or {}).get(field, {}).items():
        if not store.exists(key):
            raise DistillError(
                "The teacher's tensors for this dataset are missing from the artifact store "
                "(was the cache cleared?); resubmit the job to run the teacher again."
            )
        out[name] = np.load(store.local_path(key), allow_pickle=False)
    return out


def split_data(ctx: WorkerContext, claim: Claim, inputs: JobInputs) -> SplitData:
    """The same split on every stage that asks: the holdout comes from the seed. With online
    teacher outputs there are no training logits (t is None): the teacher runs in the loop."""
    store = ctx.store
    if streams(ctx.settings.in_memory_max_bytes, inputs):
        log.info(
            "job %s: the train set streams from its files (above STILLHOUSE_IN_MEMORY_MAX_BYTES)",
            claim.job_id,
        )
        return split_rows(ctx, claim, inputs)
    online = inputs.spec.teacher_outputs == "online"
    x, y = load_arrays(store, inputs.datasets["train_dataset_id"])
    has_t = "train_dataset_id" in cached_fields(inputs)
    t = load_logits(store, claim, "train_dataset_id") if has_t else None
    y = np.full(len(x), -1, dtype=np.int64) if y is None else y
    features = load_tensors(store, claim, "train_dataset_id")  # {name: (N, ...)}
    if "val_dataset_id" in inputs.datasets:
        x_val, y_val = load_arrays(store, inputs.datasets["val_dataset_id"])
        t_val, val_source = load_logits(store, claim, "val_dataset_id"), "val_dataset"
    else:
        order = np.random.default_rng(inputs.spec.training.seed).permutation(len(x))
        cut = max(1, int(len(x) * HOLDOUT_FRACTION))
        hold, keep = order[:cut], order[cut:]
        assert t is not None  # cached_fields names the train set when it holds the val set
        x_val, y_val, t_val = x[hold], y[hold], t[hold]
        x, y = x[keep], y[keep]
        features = {name: array[keep] for name, array in features.items()}
        t = None if online else t[keep]
        y_val = None if (y_val < 0).all() else y_val
        val_source = f"holdout ({cut} samples of the train set)"
    if "transfer_dataset_id" in inputs.datasets:
        x_transfer, _ = load_arrays(store, inputs.datasets["transfer_dataset_id"])
        x = np.concatenate([x, x_transfer.reshape(len(x_transfer), *x.shape[1:])])
        y = np.concatenate([y, np.full(len(x_transfer), -1, dtype=np.int64)])
        if t is not None:
            t = np.concatenate([t, load_logits(store, claim, "transfer_dataset_id")])
        more = load_tensors(store, claim, "transfer_dataset_id")
        features = {name: np.concatenate([a, more[name]]) for name, a in features.items()}
    return SplitData(np.asarray(x), y, t, np.asarray(x_val), y_val, t_val, val_source, features)


def split_rows(ctx: WorkerContext, claim: Claim, inputs: JobInputs) -> SplitData:
    """split_data for a set larger than memory: the same seeded holdout, as index views
    over the files (distill.batches.Rows); nothing reads the whole x. Cached teacher tensors
    for feature losses are the exception: they are held in memory, row-aligned with x."""
    store = ctx.store
    online = inputs.spec.teacher_outputs == "online"
    x, y = load_rows(store, inputs.datasets["train_dataset_id"])
    has_t = "train_dataset_id" in cached_fields(inputs)
    # The logits stream beside x (the teacher stage checked them finite as it wrote them).
    t = Rows.of(_logits_path(store, claim, "train_dataset_id")) if has_t else None
    y = np.full(len(x), -1, dtype=np.int64) if y is None else y
    features = load_tensors(store, claim, "train_dataset_id")  # {name: (N, ...)}
    x_val: np.ndarray | Rows
    if "val_dataset_id" in inputs.datasets:
        x_val, y_val = load_rows(store, inputs.datasets["val_dataset_id"])
        t_val, val_source = load_logits(store, claim, "val_dataset_id"), "val_dataset"
    else:
        order = np.random.default_rng(inputs.spec.training.seed).permutation(len(x))
        cut = max(1, int(len(x) * HOLDOUT_FRACTION))
        hold, keep = np.sort(order[:cut]), np.sort(order[cut:])
        assert t is not None  # cached_fields names the train set when it holds the val set
        x_val, y_val, t_val = x.take(hold), y[hold], np.asarray(t.take(hold))
        x, y = x.take(keep), y[keep]
        t = None if online else t.take(keep)
        features = {name: array[keep] for name, array in features.items()}
        y_val = None if (y_val < 0).all() else y_val
        val_source = f"holdout ({cut} samples of the train set)"
    if "transfer_dataset_id" in inputs.datasets:
        x_transfer, _ = load_rows(store, inputs.datasets["transfer_dataset_id"])
        x = x.concat(x_transfer)
        y = np.concatenate([y, np.full(len(x_transfer), -1, dtype=np.int64)])
        if t is not None:
            t = t.concat(Rows.of(_logits_path(store, claim, "transfer_dataset_id")))
        more = load_tensors(store, claim, "transfer_dataset_id")
        features = {name: np.concatenate([a, more[name]]) for name, a in features.items()}
    return SplitData(x, y, t, x_val, y_val, t_val, val_source, features)


def store_weights(store: ArtifactStore, model: nn.Module, spec: dict[str, Any]) -> str:
    """Save a trained model as safetensors with its zoo spec; return its artifact key."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_student(model, path, spec)
        key, _, _ = store.put_file(path)
    return key


def load_weights(ctx: WorkerContext, key: str) -> tuple[nn.Module, dict[str, Any]]:
    if not ctx.store.exists(key):
        raise DistillError(
            "The trained weights are missing from the artifact store (was it cleared?); "
            "resubmit the job."
        )
    return load_student(ctx.store.local_path(key), device=ctx.device)
