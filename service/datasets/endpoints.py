from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile, status
from fastapi.responses import JSONResponse, Response

from core import repository
from core.dispatch import inspect_message
from core.models import Dataset
from core.queues import ResourceStatus, TaskName
from core.spec import DATASET_FIELDS
from service import examples
from service.datasets.formats import format_of, unreadable, upload_options
from service.datasets.schemas import DatasetPublic
from service.deps import SettingsDep, StoreDep, TenantDep, UowDep
from service.errors import Conflict, NotFound, responses
from service.idempotency import IdempotencyDep, upload_meaning
from service.schemas import CursorQuery, IdPath, LimitQuery, NameForm, Page, paginate
from service.uploads import checked_filename, name_from, store_upload

NOT_FOUND = {
    404: "No dataset with id 'a4c8e2f6-9b1d-4e3a-8f7c-5d2b6e0a9c13' exists for this API key."
}
IN_USE = "A queued or running job uses this dataset; cancel it or wait, then delete."

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=responses(401, 503))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses=responses(
        400, 413, 415, 422, details={413: examples.UPLOAD_TOO_LARGE, 415: unreadable("data.h5")}
    ),
)
async def upload_dataset(
    uow: UowDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    store: StoreDep,
    idem: IdempotencyDep,
    file: Annotated[
        UploadFile,
        File(
            description=".npz (x, optional y), .csv / .parquet (a table of numbers), or .zip "
            "(an image folder, one folder per class)"
        ),
    ],
    name: NameForm = None,
    label_column: Annotated[
        str | None,
        Form(
            max_length=200,
            description="CSV / Parquet: the label column; absent = unlabeled",
            examples=["label"],
        ),
    ] = None,
    image_size: Annotated[
        str | None,
        Form(max_length=20, description="image zip: '28' or '28x28' (H x W)", examples=["28x28"]),
    ] = None,
    channels: Annotated[
        int | None,
        Form(
            description="image zip: 1 (grayscale) or 3 (RGB); default: the first image's",
            examples=[1],
        ),
    ] = None,
) -> DatasetPublic | JSONResponse:
    filename = checked_filename(file)
    fmt = format_of(filename)
    options = upload_options(fmt, label_column, image_size, channels)
    stored = await store_upload(file, store, settings.max_upload_bytes, uow)
    meaning = {**upload_meaning(name, None, stored), "options": options}
    replayed = await idem.replay(uow, meaning)
    if replayed is not None:
        return replayed
    row = Dataset(
        tenant_id=tenant_id,
        name=name or name_from(filename, "dataset"),
        status=ResourceStatus.PENDING.value,
        format=fmt,
        options=options,
        filename=filename,
        sha256=stored.sha256,
        size_bytes=stored.size_bytes,
        storage_key=stored.key,
    )
    uow.session.add(row)
    await uow.session.flush()
    uow.enqueue(inspect_message(TaskName.INSPECT_DATASET, row.id))
    return await idem.commit(uow, DatasetPublic.model_validate(row), status.HTTP_201_CREATED)


@router.get("", response_model=Page[DatasetPublic], responses=responses(422))
async def list_datasets(
    uow: UowDep,
    tenant_id: TenantDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[DatasetPublic]:
    rows, next_cursor = await paginate(uow.session, Dataset, tenant_id, limit, cursor)
    return Page(items=[DatasetPublic.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/{dataset_id}", response_model=DatasetPublic, responses=responses(404, details=NOT_FOUND)
)
async def get_dataset(uow: UowDep, tenant_id: TenantDep, dataset_id: IdPath) -> DatasetPublic:
    row = await uow.session.scalar(repository.owned(Dataset, tenant_id, dataset_id))
    if row is None:
        raise NotFound.of("dataset", dataset_id)
    return DatasetPublic.model_validate(row)


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(404, 409, details={**NOT_FOUND, 409: IN_USE}),
)
async def delete_dataset(uow: UowDep, tenant_id: TenantDep, dataset_id: IdPath) -> Response:
    if await uow.session.scalar(repository.owned(Dataset, tenant_id, dataset_id)) is None:
        raise NotFound.of("dataset", dataset_id)
    active = await uow.session.scalars(repository.active_job_specs(tenant_id))
    if any(dataset_id in (spec.get(f) for f in DATASET_FIELDS) for spec in active):
        raise Conflict(IN_USE)
    await uow.session.execute(repository.delete_owned(Dataset, tenant_id, dataset_id))
    await uow.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
