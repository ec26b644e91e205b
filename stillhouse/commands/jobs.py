"""`stillhouse jobs ...`: create (from a JSON or YAML spec), list, show, watch, cancel
and report distillation jobs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from stillhouse.commands.common import (
    connection,
    interactive,
    json_option,
    make_client,
    print_json,
    table,
    when,
)
from stillhouse.commands.report import print_report
from stillhouse.commands.watch import training_of, watch_job
from stillhouse.resources import JobInfo

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


@click.group()
def jobs() -> None:
    """Distillation runs: teacher inference, training, evaluation, export, benchmark."""


def read_spec(source: str, overrides: tuple[str, ...]) -> dict[str, Any]:
    """A job spec from a .json / .yaml file ('-': standard input), with KEY=VALUE
    overrides on dotted paths (VALUE read as YAML: 20, 0.5, true, a string)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {source}: {exc.strerror}.", param_hint="-f") from exc
    try:
        # safe_load: a spec is data; no YAML tag can build Python objects or run code.
        # JSON is YAML too, so one parser reads both.
        spec = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise click.BadParameter(
            f"{source} is not valid JSON or YAML: {exc}", param_hint="-f"
        ) from exc
    if not isinstance(spec, dict):
        raise click.BadParameter(f"{source} must hold one mapping (the job spec).", param_hint="-f")
    for override in overrides:
        path, sep, raw = override.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"'{override}' is not KEY=VALUE.", param_hint="--set")
        *parents, leaf = path.split(".")
        node = spec
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise click.BadParameter(
                    f"'{path}': '{part}' is not a mapping in the spec.", param_hint="--set"
                )
            node = child
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return spec


@jobs.command("create")
@click.option(
    "-f",
    "--file",
    "source",
    required=True,
    help="The job spec, a .json or .yaml file ('-' reads standard input); the body of "
    "POST /v1/jobs.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set a field of the spec, e.g. --set teacher_model_id=$TEACHER or "
    "--set training.epochs=5 (repeatable).",
)
@click.option(
    "--watch", is_flag=True, help="Follow the job to its end (exit 1 unless it succeeds)."
)
@click.option("--idempotency-key", help="Retry-safe key: a retry returns the first job.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the new job's id.")
@json_option
@connection
def create(
    source: str,
    overrides: tuple[str, ...],
    watch: bool,
    idempotency_key: str | None,
    quiet: bool,
    as_json: bool,
    url: str,
    key: str | None,
) -> int:
    """Start a distillation (or batch inference) job."""
    spec = read_spec(source, overrides)
    with make_client(url, key) as client:
        job = client.create_job(spec, idempotency_key)
        if not watch:
            if as_json:
                print_json(job)
            elif quiet:
                click.echo(job["id"])
            else:
                show_job(job)
            return 0
        if quiet:
            click.echo(job["id"])
        elif not as_json:
            click.echo(f"job {job['id']} ({job['name']}) {job['status']}")
        for warning in job.get("warnings") or []:
            click.echo(f"warning: {warning}", err=True)
        return watch_job(client, job["id"], interactive(), as_json, quiet)


@jobs.command("list")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    multiple=True,
    help="Only jobs in this status (repeat for several); the server filters.",
)
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@json_option
@connection
def list_(status: tuple[str, ...], limit: int, as_json: bool, url: str, key: str | None) -> int:
    """List jobs, newest first."""
    with make_client(url, key) as client:
        rows = client.list_jobs(",".join(status) or None, limit)
    if as_json:
        print_json(rows)
        return 0
    table(
        ["ID", "NAME", "STATUS", "STAGE", "PROGRESS", "EPOCH", "CREATED"],
        [
            (
                r["id"],
                r["name"],
                r["status"],
                r["stage"],
                f"{r['progress']:.0%}",
                _epochs(r),
                when(r["created_at"]),
            )
            for r in rows
        ],
    )
    return 0


def _epochs(job: JobInfo) -> str:
    run, epoch, epochs = training_of(job)
    if run is None:
        return "-"
    return f"{epoch}/{epochs or '?'}" + (" baseline" if run == "baseline" else "")


def show_job(job: JobInfo) -> None:
    table(
        ["FIELD", "VALUE"],
        [
            ("id", job["id"]),
            ("name", job["name"]),
            ("status", job["status"]),
            ("stage", job["stage"]),
            ("progress", f"{job['progress']:.0%}"),
            ("training", _epochs(job)),
            ("error", job["error"]),
            ("student_model_id", job["student_model_id"]),
            ("created", when(job["created_at"])),
            ("finished", when(job["finished_at"])),
            *(("warning", w) for w in job.get("warnings") or []),
        ],
    )
    if job.get("stages"):
        table(
            ["STAGE", "STATUS", "POOL", "ATTEMPTS", "STARTED", "FINISHED"],
            [
                (
                    s["name"],
                    s["status"],
                    s["pool"],
                    s["attempts"],
                    when(s["started_at"]),
                    when(s["finished_at"]),
                )
                for s in job["stages"]
            ],
        )


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@json_option
@connection
def show(job_id: str, as_json: bool, url: str, key: str | None) -> int:
    """Show one job: status, stage, epochs, stages, error."""
    with make_client(url, key) as client:
        job = client.get_job(job_id)
    if as_json:
        print_json(job)
    else:
        show_job(job)
    return 0


@jobs.command("watch")
@click.argument("job_id", metavar="ID")
@json_option
@connection
def watch(job_id: str, as_json: bool, url: str, key: str | None) -> int:
    """Follow a job to its end: progress bars on a terminal, plain lines otherwise.
    Exits 0 when it succeeded, 1 when it failed or was cancelled."""
    with make_client(url, key) as client:
        return watch_job(client, job_id, interactive(), as_json)


@jobs.command("cancel")
@click.argument("job_id", metavar="ID")
@json_option
@connection
def cancel(job_id: str, as_json: bool, url: str, key: str | None) -> int:
    """Cancel a queued or running job (the training stops at its next step)."""
    with make_client(url, key) as client:
        job = client.cancel_job(job_id)
    if as_json:
        print_json(job)
    elif job["status"] == "cancelled":
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(f"job {job_id}: cancel requested; it stops shortly ({job['status']} now)")
    return 0


@jobs.command("report")
@click.argument("job_id", metavar="ID")
@json_option
@connection
def report(job_id: str, as_json: bool, url: str, key: str | None) -> int:
    """What distillation bought: teacher, student, baseline and int8 side by side
    (accuracy, agreement, size, latency)."""
    with make_client(url, key) as client:
        body = client.job_report(job_id)
    if as_json:
        print_json(body)
    else:
        print_report(body, job_id)
    return 0
