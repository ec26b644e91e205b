"""Rules for model uploads: which formats are accepted, which are refused and why."""

from __future__ import annotations

import json
import zipfile
from pathlib import PurePosixPath
from typing import IO

from pydantic import ValidationError

from core.config import Settings
from service.errors import Unprocessable, UnsupportedMediaType
from service.models.schemas import ZooSpec

ACCEPTED = ".onnx (ONNX) or .safetensors with a zoo spec"
PICKLE_SUFFIXES = {".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".pth", ".pt", ".tar"}
TORCH_PROGRAM_SUFFIXES = {".pt2", ".ts", ".torchscript", ".jit"}

PICKLE_REFUSAL = (
    "Pickle checkpoints can run arbitrary code when loaded and are always refused; "
    "save the weights with safetensors and send them with a zoo spec, or export to ONNX."
)
PROGRAM_REFUSAL = (
    "TorchScript and torch.export programs are code, not data, and this server does not accept "
    "them; export to ONNX, or ask the operator to set STILLHOUSE_ALLOW_TORCH_PROGRAMS=1."
)


def torch_archive_kind(file: IO[bytes]) -> str:
    """Tell a TorchScript / torch.export archive from a pickled checkpoint by its
    member names alone; nothing in the archive is loaded."""
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "pickle"  # a legacy (non-zip) torch.save file is a bare pickle
    finally:
        file.seek(0)
    if any(n.endswith("archive_format") or "/models/" in n for n in names):
        return "torch_export"
    if any("/code/" in n or n.endswith("constants.pkl") for n in names):
        return "torchscript"
    return "pickle"


def detect_format(filename: str, file: IO[bytes], settings: Settings) -> str:
    suffix = PurePosixPath(filename.lower()).suffix
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in TORCH_PROGRAM_SUFFIXES | {".pt", ".pth"}:
        kind = "torch_export" if suffix == ".pt2" else torch_archive_kind(file)
        if kind == "pickle":
            raise UnsupportedMediaType(PICKLE_REFUSAL)
        if not settings.allow_torch_programs:
            raise UnsupportedMediaType(PROGRAM_REFUSAL)
        return kind
    if suffix in PICKLE_SUFFIXES:
        raise UnsupportedMediaType(PICKLE_REFUSAL)
    shown = filename or "the file"
    raise UnsupportedMediaType(f"Stillhouse cannot read '{shown}'; upload {ACCEPTED}.")


def parse_spec(raw: str | None) -> dict[str, object] | None:
    if raw is None or not raw.strip():
        return None
    try:
        return ZooSpec.model_validate(json.loads(raw)).model_dump()
    except json.JSONDecodeError as exc:
        raise Unprocessable(f"The 'spec' field is not valid JSON: {exc.msg}.") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()[:5]
        )
        raise Unprocessable(f"The 'spec' field is invalid: {problems}.") from exc
