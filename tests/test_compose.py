"""docker-compose.yml: a compose client accepts it (and refuses a broken copy), and
every STILLHOUSE_* variable it sets is a setting, with a value the settings accept.

The client is Debian's `docker-compose` (apt-get install docker-compose; the Makefile's
setup installs it, as it installs chromium): `config` parses, interpolates and checks
the file against the compose schema and its references, with no Docker engine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import Settings
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
CLIENT = shutil.which("docker-compose")
needs_client = pytest.mark.skipif(
    CLIENT is None, reason="no compose client: apt-get install docker-compose (make does)"
)


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    assert CLIENT is not None
    # The client is a Python program of its own: none of this venv's variables.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [CLIENT, "--project-directory", str(ROOT), "-f", str(path), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@needs_client
def test_the_compose_file_is_valid() -> None:
    result = compose_config(COMPOSE)
    assert result.returncode == 0, result.stderr


@needs_client
def test_a_broken_compose_file_is_refused(tmp_path: Path) -> None:
    """The check can fail: a service that depends on one that does not exist, and a
    healthcheck condition with a typo."""
    text = COMPOSE.read_text()
    for broken, needle in (
        (
            text.replace(
                "redis: {condition: service_healthy}", "cache: {condition: service_healthy}"
            ),
            "cache",
        ),
        (text.replace("condition: service_healthy", "condition: service_healty"), "service_healty"),
    ):
        assert broken != text
        path = tmp_path / "docker-compose.yml"
        path.write_text(broken)
        result = compose_config(path)
        assert result.returncode != 0 and needle in result.stderr, result.stderr


def _services() -> dict[str, Any]:
    # safe_load resolves the anchors (&stillhouse-env) and aliases (*stillhouse-env).
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "NAME=value" form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_every_stillhouse_variable_is_a_setting() -> None:
    prefix = Settings.model_config["env_prefix"]
    assert prefix == "STILLHOUSE_"
    seen: dict[str, dict[str, str]] = {}
    for name, service in _services().items():
        ours = {k: v for k, v in _environment(service).items() if k.upper().startswith(prefix)}
        unknown = [k for k in ours if k[len(prefix) :].lower() not in Settings.model_fields]
        assert not unknown, f"service {name} sets {unknown}, which core.config.Settings lacks"
        if ours:
            seen[name] = ours
    assert {"migrate", "api", "worker-cpu", "worker-gpu"} <= seen.keys(), seen.keys()
    for env in seen.values():
        # The values parse too (a production environment needs its database URL, say).
        Settings(**{k[len(prefix) :].lower(): v for k, v in env.items()})


def test_the_gpu_worker_is_its_own_cuda_image() -> None:
    services = _services()
    cpu, gpu = services["worker-cpu"], services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and "profiles" not in cpu
    assert gpu["image"] != cpu["image"] and gpu["image"] != services["api"]["image"]
    assert gpu["build"]["target"] == cpu["build"]["target"] == "worker"
    variant = gpu["build"]["args"]["TORCH_VARIANT"]
    assert variant.startswith("${TORCH_VARIANT:-cu"), variant
    assert "args" not in cpu["build"]  # the Dockerfile's default: the CPU build
    assert gpu["command"][-2:] == ["--device", "cuda:0"]
