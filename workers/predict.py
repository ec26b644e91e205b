"""Synchronous predicts: the message names a request waiting in the reply channel
(core.replies); the worker runs the model on its inputs and answers there.

Loaded models stay in a small LRU keyed by content (sha256, format, spec, device),
so repeated predicts do not reload the file. A request already gone or past its
deadline is dropped unrun. Once a live request is read, it is always answered:
the outputs, or an error with a sentence (`invalid_input` for inputs the model
cannot take, which the gateway turns into a 422; `internal` for a model that
does not load or anything else, a 502). Nothing here touches the database.

A predict is idempotent: a second delivery finds the request gone, or answers it
again, and the gateway takes the first answer."""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from functools import cache
from typing import Any, Protocol

import numpy as np
import torch

from core.config import Settings
from core.queues import TaskName
from core.replies import INTERNAL, INVALID_INPUT, Record, ReplyChannel, reply_channel
from distill.errors import DistillError
from distill.export import load_student
from distill.students import input_dtype
from distill.teachers import OnnxTeacher, padded_batches
from workers.context import WorkerContext, context
from workers.task import stillhouse_task

log = logging.getLogger("stillhouse.worker")
FAILED = (
    "The worker failed while running the model; the error is in its log. Retry, and report "
    "it if it persists."
)


class Runner(Protocol):
    def run(self, x: np.ndarray) -> np.ndarray: ...


class OnnxRunner:
    """ONNX Runtime, on CUDA when the worker's device is a GPU (distill.teachers). Its
    threads do not spin after a run: the reply, not another run, comes next."""

    def __init__(self, path: str, device: str) -> None:
        self.teacher = OnnxTeacher(path, device=device, spin=False)

    def run(self, x: np.ndarray) -> np.ndarray:
        fixed = self.teacher.input_shape[0]
        if fixed is None:
            return self.teacher.run_raw(x)
        batches = padded_batches(x, fixed, fixed)
        return np.concatenate([self.teacher.run_raw(batch)[:n] for batch, n in batches])


class TorchRunner:
    """A zoo student rebuilt from safetensors, in eager mode."""

    def __init__(self, path: str, device: str, spec: dict[str, Any] | None) -> None:
        self.model, _ = load_student(path, device=device, spec=spec)
        self.device = device

    def run(self, x: np.ndarray) -> np.ndarray:
        dtype = input_dtype(self.model)
        if dtype == torch.int64 and x.dtype.kind not in "iu":
            raise DistillError(
                "The model reads integer token ids but the inputs hold fractional numbers; "
                "send the ids as integers."
            )
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x).to(self.device, dtype))
        return out.detach().cpu().numpy()


class ModelCache:
    """The `size` models used last, loaded."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._runners: OrderedDict[str, Runner] = OrderedDict()

    def get(self, ctx: WorkerContext, record: Record) -> Runner:
        fmt = record["format"]
        spec = record.get("spec")
        key = f"{record['sha256']}/{fmt}/{ctx.device}/{json.dumps(spec, sort_keys=True)}"
        runner = self._runners.get(key)
        if runner is not None:
            self._runners.move_to_end(key)
            return runner
        path = str(ctx.store.local_path(record["key"]))
        runner = (
            TorchRunner(path, ctx.device, spec)
            if fmt == "safetensors"
            else OnnxRunner(path, ctx.device)
        )
        log.info("predict: loaded %s model %s", fmt, record["sha256"][:12])
        self._runners[key] = runner
        while len(self._runners) > self.size:
            self._runners.popitem(last=False)
        return runner


@cache
def _cache(size: int) -> ModelCache:
    return ModelCache(size)


_channels: dict[str, ReplyChannel] = {}


def _channel(settings: Settings) -> ReplyChannel:
    url = settings.resolved_broker_url
    if url not in _channels:
        _channels[url] = reply_channel(settings)
    return _channels[url]


def compute(runner: Runner, record: Record, worker_id: str) -> Record:
    """The model's first output on the request's inputs and, for a classifier's 2-D
    output, the argmax of each row."""
    try:
        x = np.asarray(record["inputs"])
        # Integers stay exact (token ids for an int64 model); each runner casts to its input.
        x = x.astype(np.int64 if x.dtype.kind in "iu" else np.float32)
    except (TypeError, ValueError) as exc:
        raise DistillError(f"The inputs are not an array of numbers ({exc}).") from exc
    out = np.asarray(runner.run(x))
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise DistillError(
            "The model produced NaN or infinite outputs on these inputs; check that they are "
            "preprocessed the way the model expects."
        )
    predictions = out.argmax(axis=1).tolist() if out.ndim == 2 else None
    return {"outputs": out.tolist(), "predictions": predictions, "worker_id": worker_id}


def answer_for(ctx: WorkerContext, record: Record) -> Record:
    """The reply to a live request, whatever happens: a model that is `ready` but does not
    load here is the server's fault (a 502); inputs it cannot take are the client's (422)."""
    try:
        runner = _cache(ctx.settings.predict_cached_models).get(ctx, record)
    except DistillError as exc:
        log.warning("predict: model %s does not load: %s", record.get("model_id"), exc)
        return {"error": INTERNAL, "detail": str(exc)}
    try:
        return compute(runner, record, ctx.worker_id)
    except DistillError as exc:
        return {"error": INVALID_INPUT, "detail": str(exc)}


@stillhouse_task(TaskName.PREDICT, max_retries=1)
def predict(request_id: str) -> None:
    ctx = context()
    channel = _channel(ctx.settings)
    record = channel.fetch(request_id)
    if record is None:
        log.info("predict %s: the request is gone (answered or given up); dropped", request_id)
        return
    left = float(record["deadline"]) - time.time()
    if left <= 0:
        log.info("predict %s: past its deadline by %.1f s; dropped unrun", request_id, -left)
        return
    try:
        reply = answer_for(ctx, record)
    except Exception:  # any bug or runtime failure: the gateway gets a sentence, not a hang
        log.exception("predict %s: model %s failed", request_id, record.get("model_id"))
        reply = {"error": INTERNAL, "detail": FAILED}
    # Unread, the answer outlives the gateway's wait a little, then expires.
    channel.answer(request_id, reply, ttl_s=math.ceil(left) + 5)
