"""The images' dependencies, without a Docker engine: the gateway image's install (the
project without extras) pulls no torch, ONNX or CUDA package, and the worker image
installs the torch that pyproject.toml pins, from the PyTorch index of its variant."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
HEAVY = ("torch", "onnx", "onnxruntime", "onnxscript", "triton")


def closure(name: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """Every distribution `pip install name[extras]` brings in, as installed here."""
    seen: dict[str, frozenset[str]] = {}
    todo = [(name, extras)]
    while todo:
        dist, wanted = todo.pop()
        key = canonicalize_name(dist)
        if key in seen and wanted <= seen[key]:
            continue
        seen[key] = seen.get(key, frozenset()) | wanted
        for line in metadata.requires(dist) or []:
            req = Requirement(line)
            envs = [{"extra": extra} for extra in wanted or {""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, frozenset(req.extras)))
    return set(seen)


def test_the_gateway_install_pulls_no_torch() -> None:
    gateway = closure("stillhouse")
    assert {"fastapi", "uvicorn", "celery", "sqlalchemy", "python-json-logger"} <= gateway
    heavy = sorted(d for d in gateway if d in HEAVY or d.startswith("nvidia-"))
    assert not heavy, f"the gateway's dependencies pull {heavy}"
    # The walk does find them where they are: in the worker's extra.
    assert {"torch", "onnxruntime"} <= closure("stillhouse", frozenset({"worker"}))


def test_the_worker_image_installs_the_pinned_torch_from_its_variants_index() -> None:
    worker = DOCKERFILE[DOCKERFILE.index("FROM base AS worker") :]
    assert "ARG TORCH_VARIANT=cpu" in worker
    assert '--index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" "$TORCH"' in worker
    # The Dockerfile reads the pin with this one-liner; run it on this checkout.
    code = re.search(r"python -c '([^']+)'", worker)
    assert code is not None
    done = subprocess.run(
        [sys.executable, "-c", code.group(1)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    pinned = [r for r in metadata.requires("stillhouse") or [] if r.startswith("torch")]
    assert [done.stdout.strip()] == [r.split(";")[0].strip() for r in pinned]
    assert done.stdout.strip().startswith("torch==")


def test_the_api_image_installs_no_extra_but_s3() -> None:
    api = DOCKERFILE[DOCKERFILE.index("FROM base AS api") : DOCKERFILE.index("FROM base AS worker")]
    assert re.findall(r"pip install (\S+)", api) == ["'.[s3]'"]
