"""`stillhouse jobs watch`: a job's progress until it ends.

For a person (a terminal): rich bars for the job, the distilled student's epochs and,
once it trains, the no-KD baseline's, each with its latest loss and validation
accuracy. For a pipe or a file: one plain line per change. The exit code is the
job's outcome: 0 succeeded, 1 failed or cancelled (with the job's error sentence)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from stillhouse.client import Client
from stillhouse.commands.common import print_json, stderr, stdout
from stillhouse.resources import JobInfo, MetricPoint

# The training stage's runs and the prefix of each one's metric names (core.stages).
RUNS = {"student": "", "baseline": "baseline/"}


@dataclass
class RunFigures:
    """A training run's latest epoch and figures, read from the job's metric points."""

    epoch: int = 0
    loss: float | None = None
    val_accuracy: float | None = None

    def text(self) -> str:
        parts = []
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.val_accuracy is not None:
            parts.append(f"val acc {self.val_accuracy:.2%}")
        return "  ".join(parts)


def latest(points: list[MetricPoint]) -> dict[str, RunFigures]:
    figures = {run: RunFigures() for run in RUNS}
    for point in sorted(points, key=lambda p: (p["epoch"], p["step"])):
        for run, prefix in sorted(RUNS.items(), key=lambda item: -len(item[1])):
            if point["name"].startswith(prefix):
                name = point["name"][len(prefix) :]
                entry = figures[run]
                entry.epoch = max(entry.epoch, point["epoch"])
                if name == "loss":
                    entry.loss = point["value"]
                elif name == "val_accuracy":
                    entry.val_accuracy = point["value"]
                break
    return figures


def training_of(job: JobInfo) -> tuple[str | None, int, int]:
    """(run, epoch, epochs asked) from the job's `training` field; a service without
    that field still gives the student's epoch and the spec's epochs."""
    epochs = int((job.get("spec") or {}).get("training", {}).get("epochs") or 0)
    training = job.get("training")
    if training:
        return training["run"], training["epoch"], training["epochs"] or epochs
    if job.get("stage") == "training" or job.get("epoch"):
        return "student", job.get("epoch", 0), epochs
    return None, 0, epochs


@dataclass
class Watch:
    client: Client
    job_id: str
    live: bool
    out: Console = field(default_factory=stdout)
    err: bool = False  # plain lines to stderr (stdout carries --json)
    figures: dict[str, RunFigures] = field(default_factory=dict)
    _seen: tuple[Any, ...] | None = None
    _metrics_at: tuple[Any, ...] | None = None
    _bars: Progress | None = None
    _tasks: dict[str, TaskID] = field(default_factory=dict)

    def __enter__(self) -> Watch:
        if self.live:
            self._bars = Progress(
                TextColumn("{task.description:<30}"),
                BarColumn(),
                TextColumn("{task.fields[count]:>9}"),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=self.out,
            )
            self._bars.start()
            self._tasks["job"] = self._bars.add_task("queued", total=1.0, count="", info="")
        return self

    def __exit__(self, *_: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def update(self, job: JobInfo) -> None:
        run, epoch, epochs = training_of(job)
        # The metric points change only when an epoch ends: read them then, not every poll.
        at = (run, epoch, job["status"])
        if run is not None and at != self._metrics_at:
            self.figures = latest(self.client.job_metrics(self.job_id))
            self._metrics_at = at
        if self._bars is not None:
            self._draw(job, run, epoch, epochs)
        else:
            self._line(job, run, epoch, epochs)

    def _draw(self, job: JobInfo, run: str | None, epoch: int, epochs: int) -> None:
        assert self._bars is not None
        running = job["status"] == "running"
        self._bars.update(
            self._tasks["job"],
            description=f"running: {job['stage']}" if running else job["status"],
            completed=job["progress"],
            count=f"{job['progress']:.0%}",
        )
        for name in RUNS:
            started = name == "student" and run is not None or run == "baseline"
            if not started:
                continue
            done = epoch if name == run else self.figures[name].epoch
            if name == "student" and run == "baseline":
                done = max(done, job.get("epoch", 0))
            if name not in self._tasks:
                label = "student (distilled)" if name == "student" else "baseline (no KD)"
                self._tasks[name] = self._bars.add_task(
                    label, total=epochs or None, count="", info=""
                )
            self._bars.update(
                self._tasks[name],
                completed=done,
                total=epochs or None,
                count=f"{done}/{epochs or '?'}",
                info=self.figures[name].text() if self.figures else "",
            )

    def _line(self, job: JobInfo, run: str | None, epoch: int, epochs: int) -> None:
        key = (job["status"], job["stage"], run, epoch)
        if key == self._seen:
            return
        self._seen = key
        parts = [f"{datetime.now():%H:%M:%S}", job["status"], job["stage"] or "-"]
        if run is not None and job["stage"] == "training":
            parts.append(f"{run} epoch {epoch}/{epochs or '?'}")
            if run in self.figures and self.figures[run].text():
                parts.append(self.figures[run].text())
        parts.append(f"{job['progress']:.0%}")
        click.echo("  ".join(parts), err=self.err)


def watch_job(
    client: Client, job_id: str, live: bool, as_json: bool = False, quiet: bool = False
) -> int:
    """Follow the job to its end; print its outcome; 0 when it succeeded, else 1. With
    `as_json` (the final job on stdout) or `quiet` (stdout holds the id alone), the
    progress goes to stderr."""
    aside = as_json or quiet
    with Watch(client, job_id, live, out=stderr() if aside else stdout(), err=aside) as watch:
        job = client.wait(job_id, on_update=watch.update)
    if as_json:
        print_json(job)
    elif not (quiet and job["status"] == "succeeded"):  # -q: the id was all stdout holds
        outcome(job)
    return 0 if job["status"] == "succeeded" else 1


def outcome(job: JobInfo) -> None:
    if job["status"] != "succeeded":
        sentence = job.get("error") or (
            "It was cancelled." if job["status"] == "cancelled" else "No reason was recorded."
        )
        stderr().print(f"job {job['id']} {job['status']}: {sentence}", markup=False)
        return
    summary = job.get("summary") or {}
    figures = []
    for name in ("teacher", "student", "baseline"):
        accuracy = (summary.get(name) or {}).get("accuracy")
        if accuracy is not None:
            figures.append(f"{name} {accuracy:.2%}")
    line = f"job {job['id']} succeeded; student model {job.get('student_model_id')}"
    click.echo(line + (f"; val accuracy: {', '.join(figures)}" if figures else ""))
