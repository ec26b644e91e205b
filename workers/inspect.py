"""Inspect uploads in a worker (never in the gateway): load the file with the
real runtime, record its shapes, and mark it ready or invalid with a sentence."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

from core.models import Dataset, Model, utcnow
from core.queues import ResourceStatus, TaskName
from core.redact import redact_paths
from distill.data import inspect_npz
from distill.errors import DistillError
from distill.export import inspect_safetensors, read_student_spec
from distill.programs import inspect_torch_program
from distill.teachers import inspect_onnx
from workers.context import context
from workers.task import stillhouse_task

log = logging.getLogger("stillhouse.worker")
# An .npz may not unpack to more than this many times the upload cap (zip bombs).
MAX_EXPANSION = 4


def _finish(entity: Any, row_id: str, **values: Any) -> None:
    values["error"] = redact_paths(values["error"]) if values.get("error") else None
    with context().sessions.begin() as session:
        row = session.get(entity, row_id)
        if row is not None and row.status == ResourceStatus.PENDING.value:
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = utcnow()


def _pending(entity: Any, row_id: str) -> Any | None:
    with context().sessions() as session:
        row = session.get(entity, row_id)
        if row is None or row.status != ResourceStatus.PENDING.value:
            return None  # deleted, or a duplicate delivery of a finished inspection
        session.expunge(row)
        return row


def _unexpected(what: str, exc: Exception) -> str:
    log.exception("inspecting %s failed", what)
    return redact_paths(f"Stillhouse could not read this {what} ({type(exc).__name__}: {exc}).")


@stillhouse_task(TaskName.INSPECT_MODEL, max_retries=3)
def inspect_model(model_id: str) -> None:
    row = _pending(Model, model_id)
    if row is None:
        return
    path = context().store.local_path(row.files[row.format]["key"])
    spec = row.spec
    try:
        if row.format == "onnx":
            info = inspect_onnx(path)
        elif row.format == "safetensors":
            spec = spec or _embedded_spec(path)
            if spec is None:
                raise DistillError(
                    "safetensors weights need a zoo spec ({'architecture', 'params', "
                    "'input_shape', 'num_classes'}); send it in the 'spec' form field."
                )
            info = inspect_safetensors(path, spec)
        else:
            info = inspect_torch_program(path, row.format)
    except DistillError as exc:
        _finish(Model, model_id, status=ResourceStatus.INVALID.value, error=str(exc))
        return
    except Exception as exc:
        _finish(
            Model, model_id, status=ResourceStatus.INVALID.value, error=_unexpected("model", exc)
        )
        return
    _finish(
        Model,
        model_id,
        status=ResourceStatus.READY.value,
        spec=spec,
        input_shape=list(info.input_shape),
        output_shape=list(info.output_shape),
        num_params=info.num_params,
    )


def _embedded_spec(path: Path) -> dict[str, Any] | None:
    try:
        return read_student_spec(path)
    except DistillError:
        return None


def check_archive(path: Path, max_bytes: int) -> None:
    """An .npz is a zip: refuse traversal-looking member names and size bombs
    before numpy unpacks anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise DistillError(
            "The file is not a valid .npz archive; save it with numpy.savez or savez_compressed."
        ) from exc
    for member in members:
        name = member.filename
        if name.startswith(("/", "\\")) or ".." in Path(name).parts:
            raise DistillError(f"The archive holds a member with an unsafe path ('{name}').")
    total = sum(m.file_size for m in members)
    if total > MAX_EXPANSION * max_bytes:
        raise DistillError(
            f"The archive unpacks to {total} bytes, more than this server accepts "
            f"({MAX_EXPANSION * max_bytes}); split the dataset into smaller files."
        )


@stillhouse_task(TaskName.INSPECT_DATASET, max_retries=3)
def inspect_dataset(dataset_id: str) -> None:
    row = _pending(Dataset, dataset_id)
    if row is None:
        return
    path = context().store.local_path(row.storage_key)
    try:
        check_archive(path, context().settings.max_upload_bytes)
        info = inspect_npz(path)
    except DistillError as exc:
        _finish(Dataset, dataset_id, status=ResourceStatus.INVALID.value, error=str(exc))
        return
    except Exception as exc:
        error = _unexpected("dataset", exc)
        _finish(Dataset, dataset_id, status=ResourceStatus.INVALID.value, error=error)
        return
    _finish(
        Dataset,
        dataset_id,
        status=ResourceStatus.READY.value,
        num_samples=info.num_samples,
        sample_shape=list(info.sample_shape),
        num_classes=info.num_classes,
        labeled=info.labeled,
    )
