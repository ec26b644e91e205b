"""The README example's figures, measured through the real service: the job that
examples/digits_kd.py writes, run for several seeds (training.seed), with the teacher, the
distilled student and the no-KD baseline from each job's report.

    .venv/bin/python bench/example_gain.py [--seeds 0 1 2]

One command: builds the example (teacher trained here, data split, job.yaml) in a temporary
folder, starts `stillhouse dev` there (embedded defaults, one CPU worker: what `make run`
starts), uploads the teacher and the three data sets over HTTP, submits job.yaml once per
seed with the ids filled in, waits for each and reads `GET /v1/jobs/{id}/report`. A job's
time is the sum of its stages' durations (teacher outputs, student and baseline training,
evaluation, export with the int8 variant, benchmark); the jobs queue on the one worker.

Spread: max - min over seeds. The gain counts when the distilled mean beats the baseline
mean by more than the larger spread, at the last epoch (nothing chosen on the validation set)
and at the selected epoch (best validation accuracy: the weights the job exports).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from kd_gain import Service, fmt, spread  # bench/ is this script's own folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.digits_kd import PLACEHOLDERS, build_example  # noqa: E402


def seconds(job: dict[str, Any]) -> float:
    """The job's own time: its stages' durations summed, without the time it queued behind
    the jobs before it on the one worker."""
    total = 0.0
    for stage in job["stages"]:
        if stage["started_at"] and stage["finished_at"]:
            started = datetime.fromisoformat(stage["started_at"])
            total += (datetime.fromisoformat(stage["finished_at"]) - started).total_seconds()
    return total


def accuracies(reports: list[dict[str, Any]], entry: str, last: bool) -> list[float]:
    if last:
        return [float(r[entry]["last_epoch"]["accuracy"]) for r in reports]
    return [float(r[entry]["accuracy"]) for r in reports]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stillhouse-example-gain-") as tmp:
        files = build_example(Path(tmp) / "example")
        print(
            f"teacher: {files.teacher_params:,} parameters, "
            f"{100 * files.teacher_val_accuracy:.1f} % on val, trained in "
            f"{files.teacher_seconds:.0f} s",
            flush=True,
        )
        spec = yaml.safe_load(files.job_yaml.read_text())
        service = Service(Path(tmp) / "service", env={})  # make run's settings
        try:
            ids = {
                "teacher_model_id": service.upload(
                    "models", "digits-teacher", files.teacher_onnx.read_bytes(), ".onnx"
                ),
                "train_dataset_id": service.upload(
                    "datasets", "digits-train", files.train_npz.read_bytes(), ".npz"
                ),
                "transfer_dataset_id": service.upload(
                    "datasets", "digits-unlabeled", files.transfer_npz.read_bytes(), ".npz"
                ),
                "val_dataset_id": service.upload(
                    "datasets", "digits-val", files.val_npz.read_bytes(), ".npz"
                ),
            }
            for field, placeholder in PLACEHOLDERS.items():
                assert spec[field] == placeholder, f"job.yaml has no {placeholder} in {field}"
            job_ids = []
            for seed in args.seeds:
                body = {**spec, **ids, "name": f"{spec['name']} seed {seed}"}
                body["training"] = {**spec["training"], "seed": seed}
                response = service.http.post("/v1/jobs", json=body)
                if response.status_code != 202:
                    raise RuntimeError(f"seed {seed}: {response.status_code} {response.text}")
                job_ids.append(str(response.json()["id"]))
            jobs, reports = [], []
            for job_id in job_ids:
                job = service.wait(
                    f"/v1/jobs/{job_id}",
                    lambda body: body["status"] in ("succeeded", "failed", "cancelled"),
                )
                if job["status"] != "succeeded":
                    raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
                jobs.append(job)
                reports.append(service.http.get(f"/v1/jobs/{job_id}/report").json())
                print(f"job {len(jobs)} of {len(job_ids)}: {seconds(job):.0f} s", flush=True)
        finally:
            service.stop()

    first = reports[0]
    print(f"\nseeds {args.seeds}; {time.monotonic() - started:.0f} s in all")
    print(
        f"teacher {100 * first['teacher']['accuracy']:.1f} %, {first['teacher']['params']:,} "
        f"params; student and baseline {first['student']['params']:,} params "
        f"({first['teacher']['params'] / first['student']['params']:.0f}x smaller)\n"
    )
    print(
        "| seed | distilled selected (epoch) | distilled last | baseline selected (epoch) "
        "| baseline last | job time |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for seed, job, r in zip(args.seeds, jobs, reports, strict=True):
        s, b = r["student"], r["baseline"]
        print(
            f"| {seed} | {100 * s['accuracy']:.1f} % ({s['selected']['epoch']}) "
            f"| {100 * s['last_epoch']['accuracy']:.1f} % "
            f"| {100 * b['accuracy']:.1f} % ({b['selected']['epoch']}) "
            f"| {100 * b['last_epoch']['accuracy']:.1f} % | {seconds(job):.0f} s |"
        )
    print("\n| epoch | no-KD baseline | distilled | gain | spread | beats the spread |")
    print("|---|---:|---:|---:|---:|---|")
    for label, last in (("last", True), ("selected", False)):
        student = accuracies(reports, "student", last)
        baseline = accuracies(reports, "baseline", last)
        gain = statistics.mean(student) - statistics.mean(baseline)
        margin = max(spread(student), spread(baseline))
        print(
            f"| {label} | {fmt(baseline)} | {fmt(student)} | {100 * gain:+.1f} pts "
            f"| {100 * margin:.1f} pts | {'yes' if gain > margin else 'no'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
