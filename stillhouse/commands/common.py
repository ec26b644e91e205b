"""What every client command shares: the service URL and key (options or environment),
the client built from them, `--json` output, tables, and upload progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from stillhouse.client import Client
from stillhouse.client import Progress as ProgressCallback

DEFAULT_URL = "http://127.0.0.1:8000"  # where `stillhouse dev` listens by default
# Files above this size get a progress bar while they upload or download.
BAR_FROM_BYTES = 1024 * 1024

F = TypeVar("F", bound=Callable[..., Any])


def connection(fn: F) -> F:
    """--url and --key, read from STILLHOUSE_URL and STILLHOUSE_KEY when not given."""
    fn = click.option(
        "--key",
        envvar="STILLHOUSE_KEY",
        show_envvar=True,
        help="API key (what `stillhouse dev` or `stillhouse keys create` printed).",
    )(fn)
    fn = click.option(
        "--url",
        envvar="STILLHOUSE_URL",
        default=DEFAULT_URL,
        show_default=True,
        show_envvar=True,
        help="Base URL of the Stillhouse service.",
    )(fn)
    return fn


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def make_client(url: str, key: str | None) -> Client:
    if not key:
        raise click.UsageError(
            "No API key: set STILLHOUSE_KEY or pass --key (`stillhouse dev` prints one)."
        )
    return Client(url, key)


def stdout() -> Console:
    """The console for results. Not a terminal (a pipe, a file): no colour, no wrapping
    of long ids, so each row stays one line a script can split."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=250, no_color=True)
    return console


def stderr() -> Console:
    # soft_wrap: a sentence stays one line, whatever the width, so a log or grep finds it.
    return Console(stderr=True, highlight=False, soft_wrap=True)


def interactive() -> bool:
    """Live bars only when a person watches: both output streams are terminals."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    grid = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(Text(cell(value)) for value in row))  # Text: no markup in data
    stdout().print(grid)


def fields(record: dict[str, Any], names: Sequence[str]) -> None:
    """One resource as `name  value` lines, in the given order."""
    table(["FIELD", "VALUE"], [(name, record.get(name)) for name in names])


def report_inspected(
    row: dict[str, Any], kind: str, as_json: bool, quiet: bool, shown: Sequence[str]
) -> int:
    """Print an uploaded row; exit 1 when the worker found the file invalid."""
    if as_json:
        print_json(row)
    elif quiet:
        click.echo(row["id"])
    else:
        fields(row, shown)
    if row["status"] == "invalid":
        stderr().print(f"error: the {kind} is invalid: {row.get('error')}", markup=False)
        return 1
    return 0


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def when(stamp: str | None) -> str:
    """An API timestamp as local 'YYYY-MM-DD HH:MM:SS'."""
    if not stamp:
        return "-"
    return f"{datetime.fromisoformat(stamp).astimezone():%Y-%m-%d %H:%M:%S}"


def size(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(count)


@contextmanager
def transfer_bar(label: str, total: int) -> Iterator[ProgressCallback | None]:
    """A progress bar on stderr for a transfer of more than BAR_FROM_BYTES, when a person
    watches; None (no callback) otherwise."""
    if total <= BAR_FROM_BYTES or not interactive():
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr(), transient=True) as bar:
        task = bar.add_task(label, total=total)

        def update(sent: int, size: int | None) -> None:
            bar.update(task, completed=sent, total=size or total)

        yield update


@contextmanager
def waiting(message: str) -> Iterator[None]:
    """A spinner on stderr while the CLI waits on the service (a person watching only)."""
    if not interactive():
        yield
        return
    with stderr().status(message):
        yield
