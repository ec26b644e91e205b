"""Loading what a job names: its spec, rows, arrays and the cached teacher outputs."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.models import Dataset, Model
from core.spec import DATASET_FIELDS, JobCreate
from core.storage import ArtifactStore
from distill.data import load_npz
from distill.errors import DistillError
from workers.context import WorkerContext


@dataclass(frozen=True)
class JobInputs:
    spec: JobCreate
    teacher: Model
    datasets: dict[str, Dataset]  # keyed by the spec field that names it


def load_inputs(ctx: WorkerContext, raw_spec: dict[str, object]) -> JobInputs:
    spec = JobCreate.model_validate(raw_spec)
    with ctx.sessions() as session:
        teacher = session.get(Model, spec.teacher_model_id)
        if teacher is None:
            raise DistillError(
                "The teacher model was deleted while the job waited; resubmit the job."
            )
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


def logits_key(teacher_sha256: str, dataset_sha256: str) -> str:
    """Teacher outputs depend only on the two files, so ten jobs on one teacher share them."""
    return f"cache/teacher-logits/{teacher_sha256}/{dataset_sha256}/logits.npy"


def load_arrays(store: ArtifactStore, dataset: Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    return load_npz(store.local_path(dataset.storage_key))


def load_logits(store: ArtifactStore, teacher: Model, dataset: Dataset) -> np.ndarray:
    key = logits_key(teacher.sha256, dataset.sha256)
    if not store.exists(key):
        raise DistillError(
            "The teacher's outputs for this dataset are missing from the artifact store "
            "(was the cache cleared?); resubmit the job to run the teacher again."
        )
    return np.load(store.local_path(key), allow_pickle=False)


def save_logits(store: ArtifactStore, teacher: Model, dataset: Dataset, logits: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "logits.npy"
        np.save(path, logits)
        store.put_named(logits_key(teacher.sha256, dataset.sha256), path)
