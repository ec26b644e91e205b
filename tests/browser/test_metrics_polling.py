"""The job view's charts while a job trains: after the first fetch the dashboard asks only
for the epochs after the last one it holds (`?since_epoch=`), and its curves still grow.

    .venv/bin/pytest tests/browser/test_metrics_polling.py
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import Page, expect

from examples.digits import DigitsFiles
from tests.browser.conftest import key_of, log_in

pytestmark = pytest.mark.usefixtures("worker")


def _ready(http: httpx.Client, kind: str, path: str) -> str:
    with open(path, "rb") as handle:
        created = http.post(f"/v1/{kind}", files={"file": (path.name, handle)}, data={"name": kind})
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    deadline = time.monotonic() + 60
    while http.get(f"/v1/{kind}/{rid}").json()["status"] != "ready":
        assert time.monotonic() < deadline, f"{kind} {rid} was not ready within 60 s"
        time.sleep(0.2)
    return str(rid)


def _points(page: Page, series: str) -> int:
    """How many points the chart's curve of `series` draws (its path's commands)."""
    d = page.locator(f'svg.chart path[data-series="{series}"]').get_attribute("d") or ""
    return len(re.findall(r"[ML]", d))


def test_a_training_job_is_polled_for_new_epochs_only(
    page: Page, live_api: str, auth: dict[str, str], digits: DigitsFiles
) -> None:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/metrics" in r.url else None)
    with httpx.Client(base_url=live_api, headers=auth, timeout=30) as http:
        body = {
            "name": "polled",
            "teacher_model_id": _ready(http, "models", digits.teacher_onnx),
            "train_dataset_id": _ready(http, "datasets", digits.train_npz),
            # Epochs of a few tenths of a second: several polls land inside the training.
            "student": {"architecture": "mlp", "params": {"hidden": [256, 256]}},
            "losses": [{"name": "kd", "weight": 1.0}],
            "training": {"epochs": 1000, "batch_size": 4},
        }
        job = http.post("/v1/jobs", json=body).json()
        try:
            log_in(page, live_api, key_of(auth))
            page.goto(f"{live_api}/#job={job['id']}")
            curve = page.locator('svg.chart path[data-series="loss"]')
            expect(curve).to_have_count(1, timeout=30_000)
            deadline = time.monotonic() + 40
            while sum("since_epoch=" in u for u in asked) < 2:
                assert time.monotonic() < deadline, f"no since_epoch polls: {asked}"
                page.wait_for_timeout(250)
            before = _points(page, "loss")
            page.wait_for_timeout(4500)  # one more poll
            assert _points(page, "loss") > before
            held = _points(page, "loss")
            full = http.get(f"/v1/jobs/{job['id']}/metrics", params={"name": "loss"}).json()
        finally:
            http.post(f"/v1/jobs/{job['id']}/cancel")
    assert not any("since_epoch" in u for u in asked[:1]), asked  # the first fetch is whole
    # The chart holds each epoch once, none it was not sent: never more than the server has.
    assert 0 < held <= len(full), (held, len(full))
