"""`stillhouse models ...`: upload, list, show, download and delete models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import click

from stillhouse.commands.common import (
    connection,
    fields,
    json_option,
    make_client,
    print_json,
    report_inspected,
    size,
    table,
    transfer_bar,
    waiting,
    when,
)
from stillhouse.resources import ModelFormat, ModelInfo

SHOWN = (
    "id name status error format formats filename size_bytes num_params input_shape "
    "output_shape sha256 spec source_job_id created_at updated_at"
).split()


@click.group()
def models() -> None:
    """Teachers, students: anything with weights."""


@models.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="A name for the model; default: the file name without its suffix.")
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON file of the zoo spec that rebuilds safetensors weights "
    '({"architecture", "params", "input_shape", "num_classes"}).',
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until a worker has inspected the file (status ready or invalid).",
)
@click.option("--idempotency-key", help="Retry-safe key: a retry returns the first upload.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the new model's id.")
@json_option
@connection
def upload(
    file: Path,
    name: str | None,
    spec_file: Path | None,
    wait: bool,
    idempotency_key: str | None,
    quiet: bool,
    as_json: bool,
    url: str,
    key: str | None,
) -> int:
    """Upload FILE: ONNX (.onnx), or safetensors weights with --spec."""
    spec = None
    if spec_file is not None:
        try:
            spec = json.loads(spec_file.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise click.BadParameter(
                f"{spec_file} is not JSON ({exc}).", param_hint="--spec"
            ) from exc
    with make_client(url, key) as client:
        with transfer_bar(f"uploading {file.name}", file.stat().st_size) as progress:
            row: dict[str, Any] = dict(
                client.upload_model(file, name, spec, progress, idempotency_key)
            )
        if wait:
            with waiting(f"a worker inspects {file.name}..."):
                row = client.wait_ready("models", row["id"])
    return report_inspected(row, "model", as_json, quiet, SHOWN)


@models.command("list")
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@json_option
@connection
def list_(limit: int, as_json: bool, url: str, key: str | None) -> int:
    """List models, newest first."""
    with make_client(url, key) as client:
        rows = client.list_models(limit)
    if as_json:
        print_json(rows)
        return 0
    table(
        ["ID", "NAME", "STATUS", "FORMATS", "PARAMS", "SIZE", "CREATED"],
        [
            (
                r["id"],
                r["name"],
                r["status"],
                ",".join(r["formats"]),
                r["num_params"],
                size(r["size_bytes"]),
                when(r["created_at"]),
            )
            for r in rows
        ],
    )
    return 0


@models.command("show")
@click.argument("model_id", metavar="ID")
@json_option
@connection
def show(model_id: str, as_json: bool, url: str, key: str | None) -> int:
    """Show one model: status, shapes, size, formats."""
    with make_client(url, key) as client:
        row: ModelInfo = client.get_model(model_id)
    if as_json:
        print_json(row)
    else:
        fields(dict(row), SHOWN)
    return 0


@models.command("download")
@click.argument("model_id", metavar="ID")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "safetensors", "onnx-int8"]),
    help="Which file; default: the model's own format.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="File (or folder) to write; default: the server's file name in this folder.",
)
@connection
def download(model_id: str, fmt: str | None, output: Path | None, url: str, key: str | None) -> int:
    """Download one of a model's files (a distilled student has onnx, safetensors and
    often onnx-int8)."""
    with make_client(url, key) as client:
        row = client.get_model(model_id)
        with transfer_bar(f"downloading {row['name']}", row["size_bytes"]) as progress:
            path = client.download_model(model_id, output, cast(ModelFormat, fmt), progress)
    click.echo(f"wrote {path} ({size(path.stat().st_size)})")
    return 0


@models.command("delete")
@click.argument("model_id", metavar="ID")
@connection
def delete(model_id: str, url: str, key: str | None) -> int:
    """Delete a model (refused while a queued or running job uses it)."""
    with make_client(url, key) as client:
        client.delete_model(model_id)
    click.echo(f"deleted model {model_id}")
    return 0
