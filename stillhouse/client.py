"""The Python client: one method per API operation, over httpx.

    from stillhouse.client import Client

    with Client("http://127.0.0.1:8000", "sh_...") as sh:
        teacher = sh.wait_ready("models", sh.upload_model("teacher.onnx", name="teacher")["id"])
        data = sh.wait_ready("datasets", sh.upload_dataset("train.npz", name="train")["id"])
        job = sh.create_job({"teacher_model_id": teacher["id"], ...})
        done = sh.wait(job["id"], on_update=lambda j: print(j["stage"], j["progress"]))
        sh.download_model(done["student_model_id"], "student.onnx", format="onnx")

Uploads stream the file from disk (never read whole into memory) and report bytes sent
to an optional callback; downloads stream to disk. Every error is a StillhouseError
(stillhouse.errors) carrying the API's `error` code, its `detail` sentence and the status.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

import httpx

from stillhouse.errors import (
    AuthError,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    StillhouseError,
    WaitTimeout,
    from_response,
)
from stillhouse.files import CountingReader, Progress, filename_of
from stillhouse.resources import (
    FINAL_STATUSES,
    DatasetInfo,
    JobInfo,
    MetricPoint,
    ModelFormat,
    ModelInfo,
    Prediction,
)

__all__ = [
    "AuthError",
    "Client",
    "ConnectionFailed",
    "NotFound",
    "Progress",
    "StillhouseError",
]

Resource = Literal["models", "datasets"]
PAGE = 200  # the API's largest page


class Client:
    """A Stillhouse service at `url`, used with the API key `key`."""

    def __init__(self, url: str, key: str, timeout: float = 30.0) -> None:
        if not url:
            raise ValueError("No service URL: pass url, e.g. http://127.0.0.1:8000.")
        if not key:
            raise ValueError("No API key: pass key (what `stillhouse dev` printed).")
        self.url = url.rstrip("/")
        # Uploads and downloads of large files may take far longer than `timeout` in all;
        # the timeout bounds each connect, read and write instead.
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )
        # job id -> (ETag, status) of the last status read, sent back as If-None-Match.
        self._status_seen: dict[str, tuple[str, JobInfo]] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ConnectionFailed(
                f"Stillhouse at {self.url} did not answer {method} {path} in time ({exc}).",
                error="timeout",
                url=self.url + path,
            ) from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"Cannot reach Stillhouse at {self.url} ({exc}); is it running? Check "
                "STILLHOUSE_URL or --url.",
                error="connection_failed",
                url=self.url + path,
            ) from exc
        _raise_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _pages(self, path: str, limit: int | None, **filters: str) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list, newest first, following next_cursor."""
        cursor, seen = None, 0
        while True:
            params: dict[str, Any] = {
                **filters,
                "limit": PAGE if limit is None else min(PAGE, limit - seen),
            }
            if cursor:
                params["cursor"] = cursor
            page = self._json("GET", path, params=params)
            for item in page["items"]:
                yield item
                seen += 1
            cursor = page.get("next_cursor")
            if not cursor or (limit is not None and seen >= limit):
                return

    def _upload(
        self,
        path: str,
        file: str | os.PathLike[str],
        fields: dict[str, str],
        progress: Progress | None,
        idempotency_key: str | None,
    ) -> Any:
        source = Path(file)
        if not source.is_file():
            raise InvalidRequest(f"No file at {source}.", error="no_file")
        total = source.stat().st_size
        with open(source, "rb") as raw:
            body = CountingReader(raw, total, progress)
            return self._json(
                "POST",
                path,
                files={"file": (source.name, cast(BinaryIO, body))},
                data=fields,
                headers=_idempotency(idempotency_key),
            )

    # -- models ----------------------------------------------------------------------------

    def upload_model(
        self,
        file: str | os.PathLike[str],
        name: str | None = None,
        spec: dict[str, Any] | None = None,
        progress: Progress | None = None,
        idempotency_key: str | None = None,
    ) -> ModelInfo:
        """Upload an ONNX file, or safetensors weights with their zoo `spec`; the model is
        `pending` until a worker inspects it (see wait_ready)."""
        fields = {"name": name} if name else {}
        if spec is not None:
            fields["spec"] = json.dumps(spec)
        return cast(ModelInfo, self._upload("/v1/models", file, fields, progress, idempotency_key))

    def list_models(self, limit: int | None = 50) -> list[ModelInfo]:
        """The newest `limit` models (all of them with None)."""
        return cast(list[ModelInfo], list(self._pages("/v1/models", limit)))

    def get_model(self, model_id: str) -> ModelInfo:
        return cast(ModelInfo, self._json("GET", f"/v1/models/{model_id}"))

    def delete_model(self, model_id: str) -> None:
        self._send("DELETE", f"/v1/models/{model_id}")

    def download_model(
        self,
        model_id: str,
        dest: str | os.PathLike[str] | None = None,
        format: ModelFormat | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Stream one of the model's files to `dest` (a file, or a folder to put the
        server's file name in; default: the current folder). Returns the path written."""
        params: dict[str, str] = {"format": format} if format else {}
        return self._download(f"/v1/models/{model_id}/file", params, dest, progress)

    def predict(
        self,
        model_id: str,
        inputs: list[Any],
        pool: str = "cpu",
        format: Literal["onnx", "safetensors", "onnx-int8"] | None = None,
        timeout_s: float | None = None,
    ) -> Prediction:
        """Run the model on a worker of `pool` and return its outputs (and argmax)."""
        body: dict[str, Any] = {"inputs": inputs, "pool": pool}
        if format:
            body["format"] = format
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        return cast(Prediction, self._json("POST", f"/v1/models/{model_id}/predict", json=body))

    # -- datasets --------------------------------------------------------------------------

    def upload_dataset(
        self,
        file: str | os.PathLike[str],
        name: str | None = None,
        label_column: str | None = None,
        image_size: str | None = None,
        channels: int | None = None,
        progress: Progress | None = None,
        idempotency_key: str | None = None,
    ) -> DatasetInfo:
        """Upload .npz (x, optional y), .csv / .parquet (with `label_column` when labeled)
        or an image-folder .zip (`image_size` "28" or "28x28", `channels` 1 or 3)."""
        fields = {
            k: str(v)
            for k, v in {
                "name": name,
                "label_column": label_column,
                "image_size": image_size,
                "channels": channels,
            }.items()
            if v is not None
        }
        return cast(
            DatasetInfo, self._upload("/v1/datasets", file, fields, progress, idempotency_key)
        )

    def list_datasets(self, limit: int | None = 50) -> list[DatasetInfo]:
        return cast(list[DatasetInfo], list(self._pages("/v1/datasets", limit)))

    def get_dataset(self, dataset_id: str) -> DatasetInfo:
        return cast(DatasetInfo, self._json("GET", f"/v1/datasets/{dataset_id}"))

    def delete_dataset(self, dataset_id: str) -> None:
        self._send("DELETE", f"/v1/datasets/{dataset_id}")

    def wait_ready(
        self, kind: Resource, resource_id: str, timeout: float | None = None
    ) -> dict[str, Any]:
        """Poll an upload until a worker has inspected it: status `ready` or `invalid`
        (with `error`); returns the row either way."""
        return self._poll(
            lambda: self._json("GET", f"/v1/{kind}/{resource_id}"),
            lambda row: row["status"] != "pending",
            timeout,
            f"{kind[:-1]} {resource_id} was still being inspected",
        )

    # -- jobs ------------------------------------------------------------------------------

    def create_job(self, spec: dict[str, Any], idempotency_key: str | None = None) -> JobInfo:
        """Start a job from its spec (the body of POST /v1/jobs). With `idempotency_key`,
        a retry of the same request returns the first job instead of a second one."""
        headers = _idempotency(idempotency_key)
        return cast(JobInfo, self._json("POST", "/v1/jobs", json=spec, headers=headers))

    def list_jobs(self, status: str | None = None, limit: int | None = 50) -> list[JobInfo]:
        """The newest `limit` jobs (all with None), only those in `status` when given: one
        status or several separated by commas, e.g. "queued,running"."""
        filters = {"status": status} if status else {}
        return cast(list[JobInfo], list(self._pages("/v1/jobs", limit, **filters)))

    def get_job(self, job_id: str) -> JobInfo:
        return cast(JobInfo, self._json("GET", f"/v1/jobs/{job_id}"))

    def job_metrics(
        self, job_id: str, name: str | None = None, since_epoch: int | None = None
    ) -> list[MetricPoint]:
        """The job's time series, e.g. loss and val_accuracy per epoch (`name`: one series;
        `since_epoch`: only points of later epochs, to fetch what is new since a poll)."""
        params: dict[str, Any] = {"name": name} if name else {}
        if since_epoch is not None:
            params["since_epoch"] = since_epoch
        return cast(
            list[MetricPoint], self._json("GET", f"/v1/jobs/{job_id}/metrics", params=params)
        )

    def job_report(self, job_id: str) -> dict[str, Any]:
        """Teacher, student, baseline and int8 variant side by side (a finished job's)."""
        return cast(dict[str, Any], self._json("GET", f"/v1/jobs/{job_id}/report"))

    def job_status(self, job_id: str) -> JobInfo:
        """The job less its `spec` and `summary` (GET /v1/jobs/{id}/status): the light read
        a poll needs, served from the gateway's cache. A poll that changed nothing since
        the last one is answered 304 and returns the same object."""
        path = f"/v1/jobs/{job_id}/status"
        last = self._status_seen.get(job_id)
        headers = {"If-None-Match": last[0]} if last is not None else {}
        response = self._send("GET", path, headers=headers)
        if response.status_code == 304 and last is not None:
            return last[1]
        job = cast(JobInfo, response.json())
        etag = response.headers.get("etag")
        if etag:
            self._status_seen[job_id] = (etag, job)
        return job

    def cancel_job(self, job_id: str) -> JobInfo:
        return cast(JobInfo, self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def download_logits(self, job_id: str, dest: str | os.PathLike[str] | None = None) -> Path:
        """A batch inference job's logits as a NumPy .npy file."""
        return self._download(f"/v1/jobs/{job_id}/logits", {}, dest, None)

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_update: Callable[[JobInfo], None] | None = None,
    ) -> JobInfo:
        """Poll the job until it has succeeded, failed or been cancelled, and return it.
        `on_update` sees every poll's job; polls start 0.25 s apart and back off to 2 s
        while nothing changes. Polls read the light status (no `spec`, no `summary`); the
        job returned, once finished, is the whole one. Raises WaitTimeout after `timeout`
        seconds."""

        def fetch() -> JobInfo:
            job = self.job_status(job_id)
            if job["status"] in FINAL_STATUSES:  # once, the whole job: its summary
                job = self.get_job(job_id)
                self._status_seen.pop(job_id, None)
            if on_update is not None:
                on_update(job)
            return job

        return cast(
            JobInfo,
            self._poll(
                fetch,
                lambda job: job["status"] in FINAL_STATUSES,
                timeout,
                f"job {job_id} had not finished",
            ),
        )

    # -- catalog and fleet -----------------------------------------------------------------

    def students(self) -> list[dict[str, Any]]:
        """The student families a job may ask for, with parameter schemas and defaults."""
        return cast(list[dict[str, Any]], self._json("GET", "/v1/students")["items"])

    def losses(self) -> list[dict[str, Any]]:
        """The loss terms a job's `losses` may name, with their parameters and papers."""
        return cast(list[dict[str, Any]], self._json("GET", "/v1/losses")["items"])

    def workers(self) -> list[dict[str, Any]]:
        """The fleet: every worker's pool, device, versions and last heartbeat."""
        return cast(list[dict[str, Any]], self._json("GET", "/v1/workers"))

    # -- helpers ---------------------------------------------------------------------------

    def _poll(
        self,
        fetch: Callable[[], Any],
        done: Callable[[Any], bool],
        timeout: float | None,
        what: str,
    ) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay, last = 0.25, None
        while True:
            current = fetch()
            if done(current):
                return current
            if deadline is not None and time.monotonic() + delay > deadline:
                raise WaitTimeout(f"{what.capitalize()} after {timeout:g} s.", error="timeout")
            # Back off while nothing moves; look again soon after something did.
            delay = 0.25 if current != last else min(2.0, delay * 1.5)
            last = current
            time.sleep(delay)

    def _download(
        self,
        path: str,
        params: dict[str, str],
        dest: str | os.PathLike[str] | None,
        progress: Progress | None,
    ) -> Path:
        try:
            with self._http.stream("GET", path, params=params) as response:
                if response.is_error:
                    response.read()
                    _raise_for(response)
                target = Path(dest) if dest is not None else Path.cwd()
                if target.is_dir():
                    target = target / filename_of(response.headers.get("content-disposition", ""))
                total = int(response.headers.get("content-length", 0)) or None
                written = 0
                # A download cut short leaves no half file under the wanted name.
                partial = target.with_name(target.name + ".part")
                with open(partial, "wb") as out:
                    for chunk in response.iter_bytes(1024 * 1024):
                        out.write(chunk)
                        written += len(chunk)
                        if progress is not None:
                            progress(written, total)
                partial.replace(target)
                return target
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"Cannot download from Stillhouse at {self.url} ({exc}); is it running?",
                error="connection_failed",
                url=self.url + path,
            ) from exc


def _raise_for(response: httpx.Response) -> None:
    if response.is_success or response.status_code == 304:  # 304: a conditional read
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    raise from_response(response.status_code, body, response.text, str(response.request.url))


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}
