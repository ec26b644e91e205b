"""The dashboard as a user drives it, in headless Chromium against the real gateway and
worker: log in, upload through the forms, start a job from the form, watch both training
runs, read the report, download the student, cancel a job, see a form error by its field.

    .venv/bin/pytest tests/browser -s      # -s prints where the screenshots went
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import onnx
import pytest
from playwright.sync_api import Page, expect

from examples.digits import DigitsFiles
from tests.browser.conftest import PHONE, Shoot, key_of, log_in

pytestmark = pytest.mark.usefixtures("worker")


def test_a_wrong_key_is_refused_in_words(page: Page, live_api: str, shoot: Shoot) -> None:
    page.goto(live_api + "/")
    page.get_by_label("API key", exact=True).fill("sh_not-a-key")
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("alert")).to_contain_text("That key was refused")
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    shoot(page, "login-refused")


def test_a_bad_student_parameter_shows_beside_its_field(
    page: Page, live_api: str, auth: dict[str, str], shoot: Shoot
) -> None:
    log_in(page, live_api, key_of(auth))
    page.get_by_role("link", name="New job").click()
    page.get_by_label("Job name").fill("too-thin")
    page.get_by_label("Student family").select_option("cnn1d")
    page.get_by_label("Channels").fill("0")
    page.get_by_role("button", name="Start job").click()
    # The API's 422 names student.params.channels; the message sits under that field.
    field = page.locator('.field[data-loc="student.params.channels"]')
    expect(field.locator(".fielderr")).to_contain_text("greater than or equal to 1")
    expect(page.get_by_label("Channels")).to_have_attribute("aria-invalid", "true")
    # Fields left empty are marked too, and focus goes to the first marked one.
    expect(page.locator('.field[data-loc="teacher_model_id"] .fielderr')).to_contain_text(
        "required"
    )
    expect(page.get_by_label("Teacher model")).to_be_focused()
    expect(page.get_by_label("Job name")).to_have_value("too-thin")
    shoot(page, "job-form-error")


def upload(page: Page, kind: str, path: Path, name: str) -> None:
    page.get_by_role("link", name=kind.capitalize()).click()
    # The view changes on the hashchange after the click: fill this kind's form, never the
    # one it replaces (a file set on the old form is lost with it).
    form = page.locator(f"form#upload-{kind}")
    expect(form).to_be_visible()
    form.get_by_label("File", exact=True).set_input_files(path)
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_role("button", name=f"Upload {kind[:-1]}").click()
    expect(page.get_by_role("status")).to_contain_text(f"Uploaded “{name}”")
    row = page.locator("tr", has=page.get_by_role("rowheader", name=name))
    expect(row.locator(".badge")).to_have_text("ready", timeout=30_000)


def option(page: Page, select: str, text: str) -> str:
    value = page.locator(f"select[name={select}] option", has_text=text).get_attribute("value")
    assert value, f"no option '{text}' in {select}"
    return value


def test_upload_train_watch_report_and_download(
    page: Page,
    live_api: str,
    auth: dict[str, str],
    digits: DigitsFiles,
    shoot: Shoot,
    tmp_path: Path,
) -> None:
    log_in(page, live_api, key_of(auth))
    upload(page, "models", digits.teacher_onnx, "digits-teacher")
    upload(page, "datasets", digits.train_npz, "digits-train")
    upload(page, "datasets", digits.val_npz, "digits-val")
    shoot(page, "datasets")

    page.get_by_role("link", name="New job").click()
    page.get_by_label("Job name").fill("mlp32-from-digits")
    page.get_by_label("Teacher model").select_option(
        option(page, "teacher_model_id", "digits-teacher")
    )
    page.get_by_label("Training data").select_option(
        option(page, "train_dataset_id", "digits-train")
    )
    page.get_by_label("Validation data").select_option(option(page, "val_dataset_id", "digits-val"))
    page.get_by_label("Student family").select_option("mlp")
    page.get_by_label("Hidden").fill("32")
    page.get_by_label("Epochs", exact=True).fill("4")
    page.get_by_label("Batch size", exact=True).first.fill("64")
    expect(page.get_by_label("Also train a no-KD baseline of the same size")).to_be_checked()
    page.get_by_text("Export, benchmark and teacher outputs").click()
    page.get_by_label("Mode", exact=True).select_option("off")
    shoot(page, "job-form")
    page.get_by_role("button", name="Start job").click()

    # The job's page: both runs' progress while it trains, then 100% and both curves.
    expect(page).to_have_url(re.compile(r"#job=[0-9a-f-]{36}$"))
    expect(page.get_by_role("heading", name="mlp32-from-digits")).to_be_visible()
    shot_running = False
    deadline = time.monotonic() + 60
    while not page.locator("#jobtitle .b-succeeded, #jobtitle .b-failed").count():
        assert time.monotonic() < deadline, "the job did not finish within 60 s"
        baseline = page.locator(
            '.run[data-run="baseline"]', has_text=re.compile(r"epoch [1-9]\d* of 4, training")
        )
        if not shot_running and baseline.count():
            shoot(page, "job-baseline-training", full_page=False)
            shot_running = True
        page.wait_for_timeout(200)
    expect(page.locator("#jobtitle .badge")).to_have_text("succeeded")
    expect(page.get_by_role("progressbar", name="job progress")).to_have_attribute(
        "aria-valuenow", "100"
    )
    expect(page.locator('.run[data-run="student"]')).to_contain_text("epoch 4 of 4, done")
    expect(page.locator('.run[data-run="baseline"]')).to_contain_text("epoch 4 of 4, done")
    for series in ("loss", "baseline/loss", "val_accuracy", "baseline/val_accuracy"):
        expect(page.locator(f'svg.chart path[data-series="{series}"]')).to_have_count(1)
    # Every curve of a chart has its own colour.
    for figure in page.locator("figure.curves").all():
        colours = [p.get_attribute("stroke") for p in figure.locator("path[data-series]").all()]
        assert len(colours) == len(set(colours)) >= 2, colours

    report = page.locator("#report")
    expect(report.get_by_role("heading", name="Report")).to_be_visible()
    expect(report.locator("tr.student").first).to_contain_text("%")
    expect(report.locator("tr.baseline").first).to_contain_text("%")
    # Quantization turned off is a fact about the job, not a fault.
    expect(report.get_by_role("note")).to_have_text("Quantization was turned off for this job.")
    expect(report.locator(".infobox")).to_have_count(1)
    expect(report.locator(".errbox, .warnbox")).to_have_count(0)
    shoot(page, "job-succeeded")
    with page.expect_download() as info:
        report.get_by_role("button", name="Download onnx", exact=True).click()
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    model = onnx.load_model_from_string(saved.read_bytes())
    assert [o.name for o in model.graph.output] and model.graph.node, "not an ONNX graph"

    # At phone width nothing spills sideways.
    page.set_viewport_size(PHONE)
    page.reload()
    expect(page.locator("#report")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shoot(page, "job-succeeded-390")
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.get_by_role("link", name="mlp32-from-digits")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shoot(page, "jobs-390")


def test_cancel_a_job_and_its_epochs_stay_true(
    page: Page, live_api: str, auth: dict[str, str], digits: DigitsFiles, shoot: Shoot
) -> None:
    with httpx.Client(base_url=live_api, headers=auth, timeout=30) as http:
        ids = {}
        for kind, path in (("models", digits.teacher_onnx), ("datasets", digits.train_npz)):
            with open(path, "rb") as handle:
                created = http.post(
                    f"/v1/{kind}",
                    files={"file": (path.name, handle)},
                    data={"name": f"digits-{kind}"},
                )
            assert created.status_code == 201, created.text
            ids[kind] = created.json()["id"]
        for kind, rid in ids.items():
            wait_until(lambda k=kind, r=rid: http.get(f"/v1/{k}/{r}").json()["status"] == "ready")
        body = {
            "name": "long-run",
            "teacher_model_id": ids["models"],
            "train_dataset_id": ids["datasets"],
            "student": {"architecture": "mlp", "params": {"hidden": [32]}},
            "losses": [{"name": "kd", "weight": 1.0}],
            "training": {"epochs": 500, "batch_size": 32},
            "baseline": True,
        }
        job = http.post("/v1/jobs", json=body).json()

        log_in(page, live_api, key_of(auth))
        page.goto(f"{live_api}/#job={job['id']}")
        # Cancel once an epoch has run, so the count it keeps is not the trivial 0.
        running = re.compile(r"epoch [1-9]\d* of 500, training")
        expect(page.locator('.run[data-run="student"]')).to_contain_text(running, timeout=30_000)
        page.get_by_role("button", name="Cancel job").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("Cancel the job “long-run”?")
        dialog.get_by_role("button", name="Cancel job").click()
        expect(page.locator("#jobtitle .badge")).to_have_text("cancelled", timeout=20_000)
        final = http.get(f"/v1/jobs/{job['id']}").json()
    ran = final["training"]["epoch"]
    assert final["training"]["run"] == "student" and 0 < ran < 500, final["training"]
    student = page.locator('.run[data-run="student"]')
    expect(student).to_contain_text(f"epoch {ran} of 500, cancelled here")
    expect(page.locator('.run[data-run="baseline"]')).to_contain_text("not run")
    shoot(page, "job-cancelled")
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.locator("tr", has_text="long-run")).to_contain_text(f"{ran}/500")

    # Deleting asks first; the row goes once confirmed.
    page.get_by_role("link", name="Models", exact=True).click()
    page.get_by_role("button", name="Delete model digits-models").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No models yet.")).to_be_visible()


def wait_until(ready: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "not ready in time"
        time.sleep(0.2)
