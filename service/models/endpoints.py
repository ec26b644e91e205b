from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile, status
from fastapi.responses import JSONResponse, Response

from core import repository
from core.dispatch import inspect_message
from core.models import Model
from core.queues import ResourceStatus, TaskName
from service import examples
from service.deps import ReadingTenantDep, SettingsDep, StateDep, StoreDep, TenantDep, UowDep
from service.downloads import BINARY, download
from service.errors import Conflict, NotFound, responses
from service.idempotency import IdempotencyDep, upload_meaning
from service.models import predict, service
from service.models.schemas import ModelPublic, PredictRequest, PredictResponse
from service.schemas import CursorQuery, IdPath, LimitQuery, NameForm, Page, paginate
from service.uploads import checked_filename, name_from, store_upload

NOT_FOUND = {
    404: "No model with id '8c2f7d1e-4b3a-4f6e-9d21-5a7b0c3e9f14' exists for this API key."
}
IN_USE = "A queued or running job uses this model; cancel it or wait, then delete."

router = APIRouter(prefix="/v1/models", tags=["models"], responses=responses(401, 503))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelPublic,
    responses=responses(400, 413, 415, 422, details={413: examples.UPLOAD_TOO_LARGE}),
)
async def upload_model(
    uow: UowDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    store: StoreDep,
    idem: IdempotencyDep,
    file: Annotated[UploadFile, File(description=service.ACCEPTED)],
    name: NameForm = None,
    spec: Annotated[
        str | None,
        Form(
            description="zoo spec JSON, for safetensors: the architecture that rebuilds the "
            "weights (GET /v1/students lists the families)",
            examples=[json.dumps(examples.ZOO_SPEC)],
        ),
    ] = None,
) -> ModelPublic | JSONResponse:
    filename = checked_filename(file)
    fmt = service.detect_format(filename, file.file, settings)
    parsed_spec = service.parse_spec(spec)
    stored = await store_upload(file, store, settings.max_upload_bytes, uow)
    replayed = await idem.replay(uow, upload_meaning(name, spec, stored))
    if replayed is not None:
        return replayed
    row = Model(
        tenant_id=tenant_id,
        name=name or name_from(filename, "model"),
        status=ResourceStatus.PENDING.value,
        format=fmt,
        filename=filename,
        sha256=stored.sha256,
        size_bytes=stored.size_bytes,
        files={fmt: {"key": stored.key, "sha256": stored.sha256, "size_bytes": stored.size_bytes}},
        spec=parsed_spec,
    )
    uow.session.add(row)
    await uow.session.flush()
    uow.enqueue(inspect_message(TaskName.INSPECT_MODEL, row.id))
    return await idem.commit(uow, ModelPublic.of(row), status.HTTP_201_CREATED)


@router.get("", response_model=Page[ModelPublic], responses=responses(422))
async def list_models(
    uow: UowDep,
    tenant_id: TenantDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[ModelPublic]:
    rows, next_cursor = await paginate(uow.session, Model, tenant_id, limit, cursor)
    return Page(items=[ModelPublic.of(r) for r in rows], next_cursor=next_cursor)


async def _get(uow: UowDep, tenant_id: str, model_id: str) -> Model:
    row = await uow.session.scalar(repository.owned(Model, tenant_id, model_id))
    if row is None:
        raise NotFound.of("model", model_id)
    return row


@router.get("/{model_id}", response_model=ModelPublic, responses=responses(404, details=NOT_FOUND))
async def get_model(uow: UowDep, tenant_id: TenantDep, model_id: IdPath) -> ModelPublic:
    return ModelPublic.of(await _get(uow, tenant_id, model_id))


@router.delete(
    "/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(404, 409, details={**NOT_FOUND, 409: IN_USE}),
)
async def delete_model(uow: UowDep, tenant_id: TenantDep, model_id: IdPath) -> Response:
    await _get(uow, tenant_id, model_id)
    active = await uow.session.scalars(repository.active_job_specs(tenant_id))
    for spec in active:
        if model_id in (spec.get("teacher_model_id"), spec.get("student", {}).get("model_id")):
            raise Conflict(IN_USE)
    # Blobs are content-addressed and may back other rows: only the row goes, and the
    # collector (core.blobs) deletes the blob once no row records it.
    await uow.session.execute(repository.delete_owned(Model, tenant_id, model_id))
    await uow.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


SUFFIXES = {
    "onnx": ".onnx",
    "onnx-int8": ".int8.onnx",
    "safetensors": ".safetensors",
    "torchscript": ".pt",
    "torch_export": ".pt2",
}


@router.get(
    "/{model_id}/file",
    response_class=Response,
    responses={**BINARY, **responses(404, 422, details=NOT_FOUND)},
)
async def download_model(
    uow: UowDep,
    tenant_id: TenantDep,
    store: StoreDep,
    model_id: IdPath,
    format: Annotated[
        Literal["onnx", "onnx-int8", "safetensors", "torchscript", "torch_export"] | None,
        Query(description="The file to download; default: the model's own format."),
    ] = None,
) -> Response:
    row = await _get(uow, tenant_id, model_id)
    wanted = format or row.format
    entry = row.files.get(wanted)
    if entry is None:
        have = ", ".join(sorted(row.files)) or "none"
        raise NotFound(f"Model '{model_id}' has no {wanted} file; available: {have}.")
    return download(store, entry["key"], f"{row.name}{SUFFIXES[wanted]}")


@router.post(
    "/{model_id}/predict",
    response_model=PredictResponse,
    responses=responses(
        400, 404, 409, 413, 422, 502, 503, 504, details={**NOT_FOUND, 413: examples.BODY_TOO_LARGE}
    ),
)
async def predict_with_model(
    state: StateDep, tenant_id: ReadingTenantDep, model_id: IdPath, body: PredictRequest
) -> PredictResponse:
    """Run the model on a worker of `pool` and wait for its outputs (at most `timeout_s`)."""
    # The session closes before the wait: a predict holds no database connection while a
    # worker runs it.
    async with state.sessions() as session:
        call = await predict.prepare(session, tenant_id, model_id, body, state.settings)
    reply = await predict.run(state.replies, state.celery, call)
    return PredictResponse(
        outputs=reply["outputs"],
        predictions=reply["predictions"],
        model_id=model_id,
        format=call.format,
        pool=call.pool,
        worker_id=reply["worker_id"],
    )
