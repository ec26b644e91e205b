"""`stillhouse dev` (what `make run` runs): migrate, then the API and one CPU worker on
embedded defaults, and a banner printed last, once both are up: URL, API key, dashboard
link and the `export STILLHOUSE_URL=... STILLHOUSE_KEY=...` line the client commands read.

The worker's and the API's logs go to files under the data folder (named in the banner)
unless -v is given, so nothing scrolls the banner away."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

import click
from rich.console import Console

from core.config import get_settings
from stillhouse.commands.admin import migrate_database

START_TIMEOUT_S = 120  # the worker imports torch and ONNX Runtime before it registers


@click.command()
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Show the worker's and the API's logs (with access lines) here instead of in "
    "files under the data folder.",
)
def dev(verbose: bool) -> int:
    """Migrate and run the API plus one CPU worker on embedded defaults."""
    from core.keys import ensure_dev_key

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate_database()
    try:
        key = ensure_dev_key(settings)
    except ValueError as exc:  # a STILLHOUSE_API_KEY too short to use
        click.echo(f"error: {exc}", err=True)
        return 2
    if not _port_free(settings.host, settings.port):
        click.echo(
            f"error: {settings.host}:{settings.port} is in use; stop what runs there or set "
            "STILLHOUSE_PORT",
            err=True,
        )
        return 1
    logs = settings.data_dir.resolve() / "logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "STILLHOUSE_DATA_DIR": str(settings.data_dir.resolve())}
    exe = [sys.executable, "-m", "stillhouse.cli"]
    level = "info" if verbose else "warning"
    files: list[IO[bytes]] = []

    def output(name: str) -> IO[bytes] | None:
        if verbose:
            return None  # inherit this terminal
        handle = open(logs / f"{name}.log", "ab")
        files.append(handle)
        return handle

    worker_out, api_out = output("worker"), output("api")
    children = [
        subprocess.Popen(
            [*exe, "worker", "--pool", "cpu", "--device", "cpu", "--log-level", level],
            env=env,
            stdout=worker_out,
            stderr=subprocess.STDOUT if worker_out else None,
        ),
        subprocess.Popen(
            [*exe, "api", "--log-level", level],
            env=env,
            stdout=api_out,
            stderr=subprocess.STDOUT if api_out else None,
        ),
    ]
    url = f"http://{settings.host}:{settings.port}"
    click.echo(f"starting the API and a CPU worker (logs: {'here' if verbose else logs})...")
    problem = _wait_up(url, key, children)
    stopping = problem is not None
    if problem is not None:
        hint = "" if verbose else f"; see {logs / 'api.log'} and {logs / 'worker.log'}"
        click.echo(f"error: {problem}{hint}", err=True)
    else:
        _banner(url, key, None if verbose else logs)

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.3)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
    for handle in files:
        handle.close()
    return 0 if stopping and problem is None else 1


def _banner(url: str, key: str, logs: Path | None) -> None:
    out = Console(highlight=False, soft_wrap=True)  # soft wrap: lines stay whole to copy
    out.print()
    out.rule("[bold green]Stillhouse is running")
    out.print(f"  URL: {url}", markup=False)
    out.print(f"  API key: {key}", markup=False)
    out.print(f"  Dashboard: {url}/#key={key}", markup=False)
    out.print(f"  API docs: {url}/docs", markup=False)
    if logs is not None:
        out.print(
            f"  Logs: {logs}/worker.log and api.log (`stillhouse dev -v` shows them here)",
            markup=False,
        )
    out.print("\n  For the `stillhouse models|datasets|jobs` commands, in another shell:")
    out.print(f"  export STILLHOUSE_URL={url} STILLHOUSE_KEY={key}", markup=False, style="bold")
    out.rule("Ctrl-C stops it")
    sys.stdout.flush()


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _wait_up(url: str, key: str, children: list[subprocess.Popen[bytes]]) -> str | None:
    """None once this run's API answers and its worker has registered; else what failed."""
    worker_pid = children[0].pid
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for child, name in zip(children, ("worker", "API"), strict=True):
            if child.poll() is not None:
                return f"the {name} exited with code {child.returncode} before it was up"
        if _worker_registered(url, key, worker_pid):
            return None
        time.sleep(0.3)
    return (
        f"the service did not come up at {url} within {START_TIMEOUT_S} s "
        "(is the port in use? set STILLHOUSE_PORT)"
    )


def _worker_registered(url: str, key: str, pid: int) -> bool:
    """True when the API answers and lists this run's worker (its id ends in /pid)."""
    request = urllib.request.Request(
        f"{url}/v1/workers", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            workers = json.load(response)
    except (OSError, ValueError):
        return False
    return any(str(w.get("id", "")).endswith(f"/{pid}") and w.get("alive") for w in workers)
