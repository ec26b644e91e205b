"""`stillhouse api` with its output in a file: uvicorn's lines, the access lines
included, are JSON objects, one per line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.config import Settings
from tests.conftest import ROOT, free_port, settings_env


def test_the_gateway_writes_json_lines(settings: Settings, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "api.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "stillhouse.cli", "api", "--port", str(port)]
            + ["--log-level", "info"],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=20)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers, lines
    access = next(line for line in lines if line["logger"] == "uvicorn.access")
    assert '"GET /healthz HTTP/1.1" 200' in access["message"], access
    assert all(line["level"] in {"INFO", "WARNING"} and line["time"] for line in lines)
