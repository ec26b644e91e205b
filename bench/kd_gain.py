"""What distillation buys on real tasks, run through the service: teacher, no-KD baseline
and distilled student, accuracy and size, with the seed-to-seed spread.

    .venv/bin/pip install -e '.[bench]'        # mnist1d (generates MNIST-1D offline)
    .venv/bin/python bench/kd_gain.py [--seeds 0 1 2] [--tasks digits-cnn2d mnist1d-cnn1d mnist1d-gru]

One command starts the service on embedded defaults (`stillhouse dev`: SQLite, the
filesystem broker, one CPU worker) in a temporary folder, trains each task's teacher in
this process (torch, then ONNX export: what a user uploads), uploads the teacher and the
data over HTTP, submits one job per task and seed with `baseline: true`, waits, and reads
`GET /v1/jobs/{id}/report`.

The setting is the one distillation is for: the teacher was trained on every label, the
student's job has few labels and an unlabeled transfer set. The baseline (the same
student architecture, `ce` on the labeled rows only, same epochs and seed) is what the
labels alone give; the distilled student learns from the labels and the teacher's
outputs on the labeled and transfer rows (`kd` + `ce`).

Tasks:
  digits-cnn2d   scikit-learn's digits as 1x8x8 images; 10 % of the 1,437 training images
                 labeled, the rest a transfer set, 360 validation images; teacher a CNN.
  mnist1d-cnn1d  MNIST-1D (Greydanus 2020; 4,000 train / 1,000 test signals of length 40);
                 10 % labeled; teacher a wide 1-D CNN trained on all 4,000 labels.
  mnist1d-gru    the same data as (T=40, F=1) sequences with a gru student.

Spread: over seeds, max - min of each run's validation accuracy. The gain counts when the
distilled student's mean beats the baseline's by more than the larger of the two spreads.
Two tables: the last epoch's accuracies (fixed epoch count, nothing chosen on the validation
set), and the best validation epoch's (what `training.select` exports), which the same
validation set also scores, so it reads a little high for every model it picks.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.digits_kd import cnn_teacher, digit_images, export_onnx, fit, split_labels  # noqa: E402

KEY = "bench-kd-gain-key-0123456789abcdef"


@dataclass(frozen=True)
class Task:
    name: str
    teacher: nn.Module  # trained, eval mode
    teacher_input: tuple[int, ...]  # one sample, as exported
    train: tuple[np.ndarray, np.ndarray]  # labeled rows
    transfer: np.ndarray  # unlabeled rows
    val: tuple[np.ndarray, np.ndarray]
    student: dict[str, Any]  # {"architecture", "params"}
    epochs: int
    lr: float
    batch_size: int


def digits_task() -> Task:
    (x, y), val = digit_images()
    torch.manual_seed(0)
    teacher = fit(cnn_teacher(channels=(64, 128), hidden=256), x, y, epochs=30, lr=1e-3)
    labeled, transfer = split_labels(x, y)
    return Task(
        name="digits-cnn2d",
        teacher=teacher,
        teacher_input=(1, 8, 8),
        train=labeled,
        transfer=transfer,
        val=val,
        student={"architecture": "cnn2d", "params": {"channels": [8, 16]}},
        epochs=60,
        lr=3e-3,
        batch_size=64,
    )


def mnist1d_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())  # generated here, offline; seed 42 by default
    return (
        data["x"].astype(np.float32),
        data["y"].astype(np.int64),
        data["x_test"].astype(np.float32),
        data["y_test"].astype(np.int64),
    )


class Conv1dTeacher(nn.Module):
    """A wide 1-D CNN for (40,) signals: the kind of model a student is distilled from."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(1, 64, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(64, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(128 * 20, 256),
            nn.ReLU(),
            nn.Linear(256, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 40) -> (B, 10)
        return self.net(x.unsqueeze(1))


def mnist1d_tasks() -> list[Task]:
    x, y, x_val, y_val = mnist1d_data()
    teacher = fit(Conv1dTeacher(), x, y, epochs=40, lr=1e-3)
    labeled, transfer = split_labels(x, y)
    common = {"teacher": teacher, "teacher_input": (40,), "epochs": 60, "lr": 3e-3}
    seq = lambda a: a.reshape(len(a), 40, 1)  # noqa: E731  (T, F) sequences for the gru
    return [
        Task(
            name="mnist1d-cnn1d",
            train=labeled,
            transfer=transfer,
            val=(x_val, y_val),
            student={"architecture": "cnn1d", "params": {"channels": 16, "layers": 3}},
            batch_size=64,
            **common,
        ),
        Task(
            name="mnist1d-gru",
            train=(seq(labeled[0]), labeled[1]),
            transfer=seq(transfer),
            val=(seq(x_val), y_val),
            student={"architecture": "gru", "params": {"hidden": 32}},
            batch_size=64,
            **common,
        ),
    ]


def onnx_bytes(net: nn.Module, sample: tuple[int, ...]) -> bytes:
    """The teacher as a user uploads it: one self-contained ONNX file, dynamic batch."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "teacher.onnx"
        export_onnx(net, sample, path)
        return path.read_bytes()


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """`stillhouse dev` in a temporary folder, on a free port."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None) -> None:
        """`env` overrides the bench's settings; the default shortens the benchmark stage."""
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {
            **os.environ,
            "STILLHOUSE_DATA_DIR": str(folder),
            "STILLHOUSE_PORT": str(self.port),
            "STILLHOUSE_API_KEY": KEY,
            **({"STILLHOUSE_BENCHMARK_SECONDS": "0.2"} if env is None else env),
        }
        self.log = (folder / "service.log").open("wb")
        command = [sys.executable, "-m", "stillhouse.cli", "dev"]
        self.process = subprocess.Popen(command, env=environment, stdout=self.log, stderr=self.log)
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"the service did not start; see {folder / 'service.log'}")

    def upload(self, kind: str, name: str, data: bytes, suffix: str) -> str:
        files = {"file": (f"{name}{suffix}", data)}
        response = self.http.post(f"/v1/{kind}", files=files, data={"name": name})
        response.raise_for_status()
        resource_id = response.json()["id"]
        self.wait(f"/v1/{kind}/{resource_id}", lambda body: body["status"] != "pending")
        body = self.http.get(f"/v1/{kind}/{resource_id}").json()
        if body["status"] != "ready":
            raise RuntimeError(f"{kind} {name} is {body['status']}: {body['error']}")
        return str(resource_id)

    def wait(self, path: str, done: Callable[[dict[str, Any]], bool], timeout: float = 3600):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.http.get(path).json()
            if done(body):
                return body
            time.sleep(1.0)
        raise TimeoutError(path)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def upload_task(service: Service, task: Task) -> dict[str, str]:
    teacher = onnx_bytes(task.teacher, task.teacher_input)
    (x, y), (xv, yv) = task.train, task.val
    return {
        "teacher_model_id": service.upload("models", task.name, teacher, ".onnx"),
        "train_dataset_id": service.upload("datasets", f"{task.name}-train", npz(x=x, y=y), ".npz"),
        "transfer_dataset_id": service.upload(
            "datasets", f"{task.name}-transfer", npz(x=task.transfer), ".npz"
        ),
        "val_dataset_id": service.upload("datasets", f"{task.name}-val", npz(x=xv, y=yv), ".npz"),
    }


def submit(service: Service, task: Task, ids: dict[str, str], seed: int) -> str:
    body = {
        "name": f"{task.name} seed {seed}",
        "student": task.student,
        **ids,
        "losses": [
            {"name": "kd", "weight": 0.9, "temperature": 4.0},
            {"name": "ce", "weight": 0.1},
        ],
        "training": {
            "epochs": task.epochs,
            "lr": task.lr,
            "batch_size": task.batch_size,
            "seed": seed,
        },
        "baseline": True,
        "quantization": {"mode": "off"},
    }
    response = service.http.post("/v1/jobs", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"{task.name}: {response.status_code} {response.text}")
    return str(response.json()["id"])


def spread(values: list[float]) -> float:
    return max(values) - min(values)


def row(task: Task, reports: list[dict[str, Any]], last: bool) -> dict[str, Any]:
    """One table row: the selected (best validation) epoch's accuracies, or with `last`
    the last epoch's, which no choice on the validation set has touched."""

    def pick(entry: str) -> list[float]:
        if last:
            return [float(r[entry]["last_epoch"]["accuracy"]) for r in reports]
        return [float(r[entry]["accuracy"]) for r in reports]

    student, baseline = pick("student"), pick("baseline")
    gain = statistics.mean(student) - statistics.mean(baseline)
    margin = max(spread(student), spread(baseline))
    first = reports[0]
    return {
        "task": task.name,
        "student": f"{task.student['architecture']} {task.student['params']}",
        "teacher_acc": first["teacher"]["accuracy"],
        "teacher_params": first["teacher"]["params"],
        "student_params": first["student"]["params"],
        "baseline": baseline,
        "distilled": student,
        "gain": gain,
        "spread": margin,
        "beats": gain > margin,
    }


def table(rows: list[dict[str, Any]]) -> None:
    print(
        "| task | student | teacher | no-KD baseline | distilled | gain | spread "
        "| params teacher / student |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['task']} | {r['student']} | {100 * r['teacher_acc']:.1f} % "
            f"| {fmt(r['baseline'])} | {fmt(r['distilled'])} | {100 * r['gain']:+.1f} pts "
            f"| {100 * r['spread']:.1f} pts | {r['teacher_params']:,} / {r['student_params']:,} |"
        )
    verdicts = ", ".join(f"{r['task']} {'yes' if r['beats'] else 'no'}" for r in rows)
    print(f"\nbeats the baseline by more than the spread: {verdicts}")


def fmt(values: list[float]) -> str:
    return (
        f"{100 * statistics.mean(values):.1f} % ({100 * min(values):.1f}-{100 * max(values):.1f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--tasks", nargs="+", default=["digits-cnn2d", "mnist1d-cnn1d", "mnist1d-gru"]
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.monotonic()
    tasks = []
    if "digits-cnn2d" in args.tasks:
        tasks.append(digits_task())
    if any(name.startswith("mnist1d") for name in args.tasks):
        tasks += [t for t in mnist1d_tasks() if t.name in args.tasks]
    print(f"teachers trained in {time.monotonic() - started:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="stillhouse-kd-gain-") as tmp:
        service = Service(Path(tmp))
        try:
            jobs: dict[str, list[str]] = {}
            for task in tasks:
                ids = upload_task(service, task)
                jobs[task.name] = [submit(service, task, ids, seed) for seed in args.seeds]
            results = []
            for task in tasks:
                reports = []
                for job_id in jobs[task.name]:
                    job = service.wait(
                        f"/v1/jobs/{job_id}",
                        lambda body: body["status"] in ("succeeded", "failed", "cancelled"),
                    )
                    if job["status"] != "succeeded":
                        raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
                    reports.append(service.http.get(f"/v1/jobs/{job_id}/report").json())
                results.append((task, reports))
                print(f"{task.name}: done", flush=True)
        finally:
            service.stop()
    print(f"\nseeds {args.seeds}; {time.monotonic() - started:.0f} s in all")
    print("\nLast epoch (no choice made on the validation set):\n")
    table([row(task, reports, last=True) for task, reports in results])
    print("\nBest validation epoch (training.select: what the job exports and reports):\n")
    table([row(task, reports, last=False) for task, reports in results])
    return 0


if __name__ == "__main__":
    sys.exit(main())
