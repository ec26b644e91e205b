"""`stillhouse datasets ...`: upload, list, show and delete datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stillhouse.commands.common import (
    connection,
    fields,
    json_option,
    make_client,
    print_json,
    report_inspected,
    table,
    transfer_bar,
    waiting,
    when,
)

SHOWN = (
    "id name status error format filename size_bytes num_samples sample_shape num_classes "
    "labeled x_dtype classes options sha256 created_at updated_at"
).split()


@click.group()
def datasets() -> None:
    """Training, validation and (unlabeled) transfer sets."""


@datasets.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="A name for the dataset; default: the file name without its suffix.")
@click.option(
    "--label-column",
    help="CSV / Parquet: the column that holds the class ids; leave out for an unlabeled set.",
)
@click.option("--image-size", help="Image-folder .zip: the size to resize to, '28' or '28x28'.")
@click.option(
    "--channels",
    type=click.IntRange(1, 3),
    help="Image-folder .zip: 1 (grayscale) or 3 (RGB); default: the first image's.",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until a worker has inspected the file (status ready or invalid).",
)
@click.option("--idempotency-key", help="Retry-safe key: a retry returns the first upload.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the new dataset's id.")
@json_option
@connection
def upload(
    file: Path,
    name: str | None,
    label_column: str | None,
    image_size: str | None,
    channels: int | None,
    wait: bool,
    idempotency_key: str | None,
    quiet: bool,
    as_json: bool,
    url: str,
    key: str | None,
) -> int:
    """Upload FILE: .npz (x, optional y), .csv / .parquet, or an image-folder .zip."""
    with make_client(url, key) as client:
        with transfer_bar(f"uploading {file.name}", file.stat().st_size) as progress:
            row: dict[str, Any] = dict(
                client.upload_dataset(
                    file, name, label_column, image_size, channels, progress, idempotency_key
                )
            )
        if wait:
            with waiting(f"a worker inspects {file.name}..."):
                row = client.wait_ready("datasets", row["id"])
    return report_inspected(row, "dataset", as_json, quiet, SHOWN)


@datasets.command("list")
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@json_option
@connection
def list_(limit: int, as_json: bool, url: str, key: str | None) -> int:
    """List datasets, newest first."""
    with make_client(url, key) as client:
        rows = client.list_datasets(limit)
    if as_json:
        print_json(rows)
        return 0
    table(
        ["ID", "NAME", "STATUS", "FORMAT", "SAMPLES", "SHAPE", "CLASSES", "LABELED", "CREATED"],
        [
            (
                r["id"],
                r["name"],
                r["status"],
                r["format"],
                r["num_samples"],
                "x".join(map(str, r["sample_shape"] or [])) or None,
                r["num_classes"],
                None if r["labeled"] is None else ("yes" if r["labeled"] else "no"),
                when(r["created_at"]),
            )
            for r in rows
        ],
    )
    return 0


@datasets.command("show")
@click.argument("dataset_id", metavar="ID")
@json_option
@connection
def show(dataset_id: str, as_json: bool, url: str, key: str | None) -> int:
    """Show one dataset: samples, shape, classes, labeled."""
    with make_client(url, key) as client:
        row = client.get_dataset(dataset_id)
    if as_json:
        print_json(row)
    else:
        fields(dict(row), SHOWN)
    return 0


@datasets.command("delete")
@click.argument("dataset_id", metavar="ID")
@connection
def delete(dataset_id: str, url: str, key: str | None) -> int:
    """Delete a dataset (refused while a queued or running job uses it)."""
    with make_client(url, key) as client:
        client.delete_dataset(dataset_id)
    click.echo(f"deleted dataset {dataset_id}")
    return 0
