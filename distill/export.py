"""Student artifacts: safetensors weights with the zoo spec in metadata, and ONNX export."""

from __future__ import annotations

import contextlib
import json
import linecache
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from distill.batches import Rows
from distill.errors import DistillError
from distill.onnx_registry import install as reuse_onnx_registry
from distill.onnx_safety import read_onnx
from distill.students import build_student, example_input, input_dtype
from distill.teachers import ModelInfo, check_io, fit_samples, make_session, padded_batches

SPEC_KEY = "stillhouse_spec"
SPEC_FIELDS = ("architecture", "params", "input_shape", "num_classes")


def _check_spec(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict) or any(k not in spec for k in SPEC_FIELDS):
        raise DistillError(
            f"A student spec must be an object with {', '.join(SPEC_FIELDS)}, got {spec!r}."
        )
    return {k: spec[k] for k in SPEC_FIELDS}


def save_student(model: nn.Module, path: str | os.PathLike, spec: dict[str, Any]) -> None:
    """Write the weights (and buffers) as safetensors, the zoo spec as JSON in the metadata."""
    spec = _check_spec(spec)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata={SPEC_KEY: json.dumps(spec)})


def read_student_spec(path: str | os.PathLike) -> dict[str, Any]:
    """The zoo spec stored in a student file's metadata."""
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise DistillError(f"The file is not a readable safetensors file ({exc}).") from exc
    if SPEC_KEY not in metadata:
        raise DistillError(
            "The safetensors file has no Stillhouse student spec in its metadata; give the spec "
            "(architecture, params, input_shape, num_classes) explicitly."
        )
    try:
        return _check_spec(json.loads(metadata[SPEC_KEY]))
    except json.JSONDecodeError as exc:
        raise DistillError(f"The stored student spec is not valid JSON ({exc}).") from exc


def _build_and_load(path: str | os.PathLike, spec: dict[str, Any], device: str) -> nn.Module:
    model = build_student(
        spec["architecture"], spec["params"], tuple(spec["input_shape"]), spec["num_classes"]
    )
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise DistillError(f"The file is not a readable safetensors file ({exc}).") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        name = missing[0] if missing else extra[0]
        kind = "is missing" if missing else "is not part of the student"
        raise DistillError(
            f"The weights do not fit the {spec['architecture']!r} student: tensor {name!r} "
            f"{kind}; check the architecture and params."
        )
    for key in expected:  # the model's own order: the first layer that differs is named
        value = tensors[key]
        if value.shape != expected[key].shape:
            raise DistillError(
                f"The weights do not fit the {spec['architecture']!r} student: tensor {key!r} "
                f"has shape {list(value.shape)}, the student expects "
                f"{list(expected[key].shape)}; check the architecture, params and input shape."
            )
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()


def load_student(
    path: str | os.PathLike, device: str = "cpu", spec: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a student from the zoo; returns (model in eval mode, spec).

    The spec comes from the file's metadata unless `spec` is given: a plain safetensors file
    uploaded with its spec as a separate field has none, and passes inspection the same way.
    """
    spec = read_student_spec(path) if spec is None else _check_spec(spec)
    return _build_and_load(path, spec, device), spec


def inspect_safetensors(path: str | os.PathLike, spec: dict[str, Any] | None) -> ModelInfo:
    """Load a zoo student's weights strictly and run one batch of zeros."""
    try:
        spec = read_student_spec(path)
    except DistillError:
        if spec is None:
            raise
        spec = _check_spec(spec)
    model = _build_and_load(path, spec, "cpu")
    sample_shape = [int(d) for d in spec["input_shape"]]
    with torch.no_grad():
        out = model(torch.zeros(2, *sample_shape, dtype=input_dtype(model)))  # (2, C)
    return ModelInfo(
        format="safetensors",
        input_shape=[None, *sample_shape],
        output_shape=[None, *out.shape[1:]],
        num_params=sum(p.numel() for p in model.parameters()),
    )


@contextlib.contextmanager
def forget_generated_sources() -> Iterator[None]:
    """Drop the sources torch.fx generates while the block runs. Each GraphModule the
    exporter builds (about 19 an export) leaves its Python source in torch.fx's eval cache
    and a lazy entry in `linecache`, for tracebacks, and nothing ever removes them: a
    long-lived worker grew about 0.2 MB a job (bench/worker_memory.py). The modules are
    garbage once the ONNX file is written, so their sources go with them."""
    loader = getattr(torch.fx.graph_module, "_loader", None)
    cache = getattr(loader, "eval_cache", None)
    if not isinstance(cache, dict):  # another torch layout: nothing to forget
        yield
        return
    before = set(cache)
    try:
        yield
    finally:
        for key in set(cache) - before:
            cache.pop(key, None)
            linecache.cache.pop(key, None)


def export_onnx(model: nn.Module, sample_shape: tuple[int, ...], path: str | os.PathLike) -> None:
    """Export to ONNX with a dynamic batch dim (input "input", output "logits") and check that
    ONNX Runtime agrees with torch within 1e-4."""
    model = model.cpu().eval()
    reuse_onnx_registry()  # the exporter's op registry, built once per process
    example = example_input(model, 3, tuple(sample_shape), seed=0)  # float32 or int64 ids
    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings(), forget_generated_sources():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecations
            torch.onnx.export(
                model,
                (example,),
                os.fspath(path),
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many error types
        raise DistillError(
            f"The student could not be exported to ONNX ({str(exc).strip()[:300]}); "
            "report this with the student architecture."
        ) from exc
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    check = example_input(model, 5, tuple(sample_shape), seed=1)
    with torch.no_grad():
        expected = model(check).numpy()  # (5, C)
    (got,) = session.run(["logits"], {"input": check.numpy()})
    if not np.allclose(got, expected, atol=1e-4, rtol=1e-4):
        raise DistillError(
            "The ONNX export does not match the PyTorch student (max difference "
            f"{float(np.abs(got - expected).max()):.2e}); export it again or report a bug."
        )


def parity_max_abs_diff(
    model: nn.Module, onnx_path: str | os.PathLike, x: np.ndarray | Rows, batch_size: int = 1024
) -> float:
    """The largest |torch - ONNX Runtime| output difference over every row of x (N, ...).

    export_onnx checks 5 random rows; this runs real data (e.g. the validation set), where
    ranges random inputs never reach (a BatchNorm's extreme statistics, large activations)
    would show a divergence. Both run on CPU in float32 (int64 ids for a token student); the model is moved to CPU and put in
    eval mode. inf when either side gives a non-finite output the other does not match."""
    if len(x) == 0:
        raise DistillError("There are no samples to compare the export on; give a non-empty set.")
    model = model.cpu().eval()
    session = make_session(read_onnx(onnx_path)[0], "cpu")
    name, shape, dtype = check_io(session)
    rows = fit_samples(np.asarray(x), shape[1:], "model")  # (N, ...)
    # The model's own input type: int64 ids for a token student (never cast to float).
    rows = np.ascontiguousarray(
        rows, dtype=np.int64 if input_dtype(model) == torch.int64 else np.float32
    )
    worst = 0.0
    with torch.inference_mode():
        for xb, n in padded_batches(rows, shape[0], batch_size):  # (b, ...), n real rows
            expected = model(torch.from_numpy(xb)).numpy()[:n]  # (n, C)
            try:
                got, *_ = session.run(None, {name: xb.astype(dtype, copy=False)})
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise DistillError(
                    f"The ONNX model failed on rows of shape {list(xb.shape[1:])} "
                    f"({str(exc).strip()[:300]}); check that it is the export of this model."
                ) from exc
            got = np.asarray(got)[:n]  # (n, C)
            if got.shape != expected.shape:
                raise DistillError(
                    f"The ONNX model returns outputs of shape {list(got.shape)} where the "
                    f"PyTorch model returns {list(expected.shape)}; export it again."
                )
            diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
            same = (got == expected) | (np.isnan(got) & np.isnan(expected))  # inf == inf too
            diff[same] = 0.0
            if not np.isfinite(diff).all():
                return float("inf")
            worst = max(worst, float(diff.max()))
    return worst
