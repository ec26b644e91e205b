"""Rules of a synchronous predict: which model file runs, which inputs fit it, and
the round trip to a worker through the broker and the reply channel (core.replies).

Everything a request can get wrong is refused here, before a message leaves; the
gateway never loads the model (no torch, no onnxruntime: the shapes come from the
model's inspection). The message carries the request's id only; the request
itself waits in the reply channel with a deadline, and so does the answer."""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from celery import Celery
from sqlalchemy.ext.asyncio import AsyncSession

from core import repository
from core.config import Settings
from core.dispatch import predict_message, send
from core.models import Model, new_id
from core.queues import ResourceStatus
from core.replies import INVALID_INPUT, ChannelUnavailable, Record, ReplyChannel
from core.stages import resolve_pool
from service.errors import (
    BadGateway,
    Conflict,
    GatewayTimeout,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
)
from service.jobs.service import live_workers
from service.models.schemas import PredictRequest

log = logging.getLogger("stillhouse.api")

# Files a worker can run for a predict: ONNX in ONNX Runtime, zoo safetensors in torch.
SERVABLE = ("onnx", "onnx-int8", "safetensors")
BROKER_DOWN = "Stillhouse cannot reach its broker right now; retry in a few seconds."


@dataclass(frozen=True)
class PredictCall:
    """A checked request, ready to send: what the worker reads, and where it goes."""

    request_id: str
    model_id: str
    format: str
    pool: str
    timeout_s: float
    deadline: float  # time.time() past which no one waits for the answer
    record: Record


async def prepare(
    session: AsyncSession, tenant_id: str, model_id: str, body: PredictRequest, settings: Settings
) -> PredictCall:
    """Every check that needs no worker; one read (the model row), two with pool `auto`."""
    row = await session.scalar(repository.owned(Model, tenant_id, model_id))
    if row is None:
        raise NotFound.of("model", model_id)
    if row.status == ResourceStatus.PENDING.value:
        raise Conflict(
            f"Model '{model_id}' is still being inspected; retry when its status is 'ready'."
        )
    if row.status != ResourceStatus.READY.value:
        raise Conflict(f"Model '{model_id}' is invalid and cannot serve predictions: {row.error}")
    fmt = _format(row, body.format)
    if len(body.inputs) > settings.max_predict_samples:
        raise Unprocessable(
            f"inputs holds {len(body.inputs):,} samples but a predict takes at most "
            f"{settings.max_predict_samples:,} (STILLHOUSE_MAX_PREDICT_SAMPLES); send fewer "
            "per request."
        )
    check_inputs(body.inputs, row)
    pool = body.pool
    if pool == "auto":
        pool = resolve_pool(pool, await live_workers(session, settings))
    timeout_s = body.timeout_s or settings.predict_timeout_s
    deadline = time.time() + timeout_s
    entry = row.files[fmt]
    record: Record = {
        "tenant_id": tenant_id,
        "model_id": model_id,
        "format": fmt,
        "key": entry["key"],
        "sha256": entry["sha256"],
        "spec": row.spec if fmt == "safetensors" else None,
        "inputs": body.inputs,
        "deadline": deadline,
    }
    return PredictCall(new_id(), model_id, fmt, pool, timeout_s, deadline, record)


def _format(row: Model, wanted: str | None) -> str:
    """The requested file, or by default the ONNX one when the model has it, else its own."""
    fmt = wanted or ("onnx" if "onnx" in row.files else row.format)
    if fmt not in row.files:
        have = ", ".join(sorted(row.files)) or "none"
        raise NotFound(f"Model '{row.id}' has no {fmt} file; available: {have}.")
    if fmt not in SERVABLE:
        raise Unprocessable(
            f"Model '{row.id}' is a {fmt} program, which predict does not serve; upload it "
            "exported to ONNX (or as safetensors with a zoo spec) to predict with it."
        )
    return fmt


def _shape(value: Any) -> tuple[int, ...] | None:
    """The shape of a nested list of finite numbers; None when it is ragged or holds
    anything else (text, booleans, null, NaN)."""
    if type(value) is list:
        if not value:
            return (0,)
        first = _shape(value[0])
        if first is None or any(_shape(item) != first for item in value[1:]):
            return None
        return (len(value), *first)
    if type(value) in (int, float) and math.isfinite(value):
        return ()
    return None


def _all_integers(value: Any) -> bool:
    """Every leaf of a nested list (already checked to be numbers) is a JSON integer."""
    if type(value) is list:
        return all(_all_integers(item) for item in value)
    return type(value) is int


def check_inputs(inputs: list[Any], row: Model) -> None:
    """Every sample has the model's per-sample shape (input_shape without the batch)."""
    if not row.input_shape:
        raise Unprocessable(f"Model '{row.id}' has no recorded input shape to check inputs by.")
    expected = list(row.input_shape[1:])
    # A zoo student built with vocab_size reads int64 token ids: integers only.
    tokens = (row.spec or {}).get("params", {}).get("vocab_size") is not None
    for index, sample in enumerate(inputs):
        got = _shape(sample)
        if got is None:
            raise Unprocessable(
                f"inputs[{index}] is not a nested list of finite numbers of one shape; model "
                f"'{row.id}' takes {expected} per sample."
            )
        fits = len(got) == len(expected) and all(
            want is None or want == have for want, have in zip(expected, got, strict=True)
        )
        if not fits:
            raise Unprocessable(
                f"inputs[{index}] has shape {list(got)} but model '{row.id}' takes {expected} "
                "per sample."
            )
        if tokens and not _all_integers(sample):
            raise Unprocessable(
                f"inputs[{index}] holds a number that is not an integer but model '{row.id}' "
                "reads token ids; send the ids as integers."
            )


async def run(channel: ReplyChannel, celery: Celery, call: PredictCall) -> Record:
    """Leave the request, send its id to the pool, wait for the first answer; the request
    (and any answer) is removed afterwards, answered or not."""
    try:
        await channel.post(call.request_id, call.record, call.timeout_s + 1)
    except ChannelUnavailable as exc:
        log.warning("predict %s: the reply channel is unreachable: %s", call.request_id, exc)
        raise ServiceUnavailable(BROKER_DOWN) from exc
    try:
        expires = datetime.fromtimestamp(call.deadline, UTC)
        message = predict_message(call.request_id, call.pool, expires)
        sent = await anyio.to_thread.run_sync(functools.partial(send, celery, message))
        if not sent:
            raise ServiceUnavailable(BROKER_DOWN)
        reply = await channel.wait(call.request_id, call.deadline - time.time())
    except ChannelUnavailable as exc:
        log.warning("predict %s: the reply channel is unreachable: %s", call.request_id, exc)
        raise ServiceUnavailable(BROKER_DOWN) from exc
    finally:
        try:
            await channel.forget(call.request_id)
        except ChannelUnavailable:  # both expire on their own
            log.warning("predict %s: could not remove the request", call.request_id)
    if reply is None:
        raise GatewayTimeout(
            f"No worker of pool '{call.pool}' answered within {call.timeout_s:g} s; start a "
            "worker for that pool, or retry with a longer timeout_s (a worker runs one task at "
            "a time, so a predict waits behind a training stage running on it)."
        )
    error = reply.get("error")
    if error == INVALID_INPUT:
        raise Unprocessable(str(reply.get("detail")))
    if error is not None:
        raise BadGateway(str(reply.get("detail")))
    return reply
