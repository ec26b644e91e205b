"""Inspect uploads in a worker (never in the gateway): load the file with the
real runtime, record its shapes, and mark it ready or invalid with a sentence.

An inspection is claimed first, like a job stage (core.inspection): a
duplicate delivery finds it held and does nothing; the claim's heartbeat is
renewed while the file is read, so a worker that dies is noticed and the
sweeper sends the upload again; a file that stopped the inspector
`max_inspect_attempts` times becomes invalid instead of being loaded again.
A dataset is read in a child process under a memory ceiling (distill.inspector).
Whatever goes wrong ends in `invalid` with a sentence, the final write included.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from core import inspection
from core.inspection import InspectClaim
from core.models import Dataset, Model
from core.queues import ResourceStatus, TaskName
from core.redact import redact_paths
from distill.errors import DistillError
from distill.export import inspect_safetensors, read_student_spec
from distill.inspector import Conversion, InspectionStopped, Limits, convert_isolated
from distill.npz_scan import DatasetInfo
from distill.programs import inspect_torch_program
from distill.teachers import ModelInfo, inspect_onnx
from workers.context import WorkerContext, context
from workers.failpoints import inspection_failpoint
from workers.retry import read, transact
from workers.task import TRANSIENT, stillhouse_task

log = logging.getLogger("stillhouse.worker")
INVALID, READY = ResourceStatus.INVALID.value, ResourceStatus.READY.value
Info = TypeVar("Info")


class ClaimKeeper:
    """Renews an inspection's claim every heartbeat from a thread while the file is read;
    `lost` is set when the claim was taken over (this worker was silent too long)."""

    def __init__(self, ctx: WorkerContext, claim: InspectClaim) -> None:
        self.ctx, self.claim = ctx, claim
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inspect-claim", daemon=True)

    def __enter__(self) -> ClaimKeeper:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.ctx.settings.worker_heartbeat_s):
            try:
                with self.ctx.sessions.begin() as session:
                    held = inspection.heartbeat(session, self.claim)
            except Exception:  # a database blip: try again next beat
                log.warning("could not renew the inspection claim", exc_info=True)
                continue
            if not held:
                self.lost.set()
                return


def _claim(ctx: WorkerContext, entity: Any, row_id: str) -> InspectClaim | None:
    """The claim, or None: finished, deleted, held by a live worker (a duplicate
    delivery), or out of attempts, in which case the file is marked invalid here."""
    settings = ctx.settings
    timeout, attempts = settings.heartbeat_timeout_s, settings.max_inspect_attempts
    what = f"claiming {entity.__tablename__} {row_id}"
    claim = transact(ctx, what, lambda s: inspection.claim(s, entity, row_id, timeout, attempts))
    if claim is None:
        gave_up = transact(
            ctx, what, lambda s: inspection.give_up(s, entity, row_id, timeout, attempts)
        )
        if gave_up:
            log.warning(
                "%s %s stopped the inspector %d times; invalid",
                entity.__tablename__,
                row_id,
                attempts,
            )
    return claim


def _load(ctx: WorkerContext, claim: InspectClaim) -> Any | None:
    """The claimed row, or None when it was deleted since the claim."""

    def load(session: Session) -> Any | None:
        row = session.get(claim.entity, claim.row_id)
        if row is not None:
            session.expunge(row)
        return row

    return read(ctx, f"reading {claim.entity.__tablename__} {claim.row_id}", load)


def _unexpected(what: str, exc: Exception) -> str:
    log.exception("inspecting %s failed", what)
    return redact_paths(f"Stillhouse could not read this {what} ({type(exc).__name__}: {exc}).")


def _read_or_refuse(
    ctx: WorkerContext, claim: InspectClaim, what: str, inspect: Callable[[], Info]
) -> Info | None:
    """What `inspect()` found; or None once a failure ended the upload `invalid` with a
    sentence. Infrastructure errors (the task's retry is theirs) and a lost claim are
    raised."""
    try:
        return inspect()
    except DistillError as exc:
        _finish(ctx, claim, what, status=INVALID, error=str(exc))
    except TRANSIENT:
        raise
    except InspectionStopped:
        raise
    except Exception as exc:
        _finish(ctx, claim, what, status=INVALID, error=_unexpected(what, exc))
    return None


def _finish(ctx: WorkerContext, claim: InspectClaim, what: str, **values: Any) -> None:
    """Record the outcome under the claim. A write the database refuses (a value out of
    its range, say) becomes `invalid` with a sentence rather than an upload left pending."""
    if values.get("error"):
        values["error"] = redact_paths(values["error"])
    recording = f"recording the inspection of {what} {claim.row_id}"
    try:
        held = transact(ctx, recording, lambda s: inspection.finish(s, claim, **values))
    except OperationalError:
        raise  # away past the retry budget: the claim goes stale and the sweeper re-sends it
    except DBAPIError as exc:
        log.exception("recording the inspection of %s %s failed", what, claim.row_id)
        reason = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
        error = (
            f"Stillhouse could not record what it found in this {what} ({reason}); check its "
            "shapes and labels for values out of the ordinary and upload it again."
        )
        held = transact(
            ctx, recording, lambda s: inspection.finish(s, claim, status=INVALID, error=error)
        )
    if not held:
        log.warning(
            "%s %s: the inspection claim was taken over; result dropped", what, claim.row_id
        )


@stillhouse_task(TaskName.INSPECT_MODEL, max_retries=3)
def inspect_model(model_id: str) -> None:
    ctx = context()
    claim = _claim(ctx, Model, model_id)
    if claim is None:
        return
    row = _load(ctx, claim)
    if row is None:
        return
    spec = row.spec

    def read_model() -> ModelInfo:
        nonlocal spec
        path = ctx.store.local_path(row.files[row.format]["key"])
        if row.format == "onnx":
            return inspect_onnx(path)
        if row.format == "safetensors":
            spec = spec or _embedded_spec(path)
            if spec is None:
                raise DistillError(
                    "safetensors weights need a zoo spec ({'architecture', 'params', "
                    "'input_shape', 'num_classes'}); send it in the 'spec' form field."
                )
            return inspect_safetensors(path, spec)
        return inspect_torch_program(path, row.format)

    with ClaimKeeper(ctx, claim):
        info = _read_or_refuse(ctx, claim, "model", read_model)
    if info is None:
        return
    _finish(
        ctx,
        claim,
        "model",
        status=READY,
        spec=spec,
        input_shape=list(info.input_shape),
        output_shape=list(info.output_shape),
        num_params=info.num_params,
        tensors=getattr(info, "tensors", None),
    )


def _embedded_spec(path: Path) -> dict[str, Any] | None:
    try:
        return read_student_spec(path)
    except DistillError:
        return None


@stillhouse_task(TaskName.INSPECT_DATASET, max_retries=3)
def inspect_dataset(dataset_id: str) -> None:
    ctx = context()
    claim = _claim(ctx, Dataset, dataset_id)
    if claim is None:
        return
    row = _load(ctx, claim)
    if row is None:
        return
    settings = ctx.settings
    limits = Limits(
        settings.max_dataset_decoded_bytes,
        settings.max_classes,
        settings.inspect_memory_bytes,
        settings.max_zip_entries,
        settings.max_zip_expanded_bytes,
    )
    pause_s, kill = inspection_failpoint(settings.failpoints, "inspect_dataset")
    with ClaimKeeper(ctx, claim) as keeper:

        def keep_going() -> bool:
            if kill:
                log.warning("failpoint: killing this worker mid-inspection")
                os.kill(os.getpid(), signal.SIGKILL)
            return not keeper.lost.is_set()

        def read_dataset() -> tuple[DatasetInfo, dict[str, Any]]:
            path = ctx.store.local_path(row.storage_key)
            with tempfile.TemporaryDirectory(prefix="stillhouse-inspect-") as out:
                conversion = Conversion(row.format, row.options or {}, out)
                info, files = convert_isolated(
                    path, limits, conversion, keep_going, poll_s=0.5, pause_s=pause_s
                )
                # Only a file that converted whole reaches the store.
                return info, store_arrays(ctx, files)

        try:
            found = _read_or_refuse(ctx, claim, "dataset", read_dataset)
        except InspectionStopped:
            log.warning("dataset %s: the inspection claim was taken over; stopped", dataset_id)
            return
    if found is None:
        return
    info, arrays = found
    _finish(
        ctx,
        claim,
        "dataset",
        status=READY,
        num_samples=info.num_samples,
        sample_shape=list(info.sample_shape),
        num_classes=info.num_classes,
        labeled=info.labeled,
        arrays=arrays,
    )


def store_arrays(ctx: WorkerContext, files: dict[str, Any]) -> dict[str, Any]:
    """Put the canonical x.npy / y.npy into the artifact store: {"x": key, "y": key | None,
    "x_dtype", "classes"} as Dataset.arrays records it."""
    arrays = dict(files)
    for name in ("x", "y"):
        if files.get(name) is not None:
            arrays[name] = ctx.store.put_file(files[name])[0]
    if arrays.get("classes") is None:
        arrays.pop("classes", None)
    return arrays
