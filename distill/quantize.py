"""The int8 variant of an exported student, made with ONNX Runtime's quantization tools.

Two modes, picked from the graph by choose_mode:

- dynamic: weights stored in int8; each MatMul/Gemm quantizes its input per batch at run time
  (DynamicQuantizeLinear -> MatMulInteger). No calibration data, no clipping of activations.
- static: QDQ format, activation ranges calibrated (MinMax) on training rows ahead of time;
  ONNX Runtime fuses each QuantizeLinear -> op -> DequantizeLinear into an int8 kernel.

Why Conv decides it. Students trained briefly on sklearn digits (1,437 training rows, 360
validation rows), exported by distill.export.export_onnx, quantized both ways; latency and
throughput with distill.benchmark.measure_onnx (1 thread, batch 256, 2 s) on a 2-core AMD EPYC
VM, onnxruntime 1.32 (2026-11-28). Agreement = same argmax as the float model.

    student (float acc)       mode     acc     agreement  p50 latency  throughput
    mlp [64]      (0.978)     dynamic  0.975   0.997      1.19x        1.14x
                              static   0.975   0.997      1.22x        1.13x
    mlp [256,256] (0.961)     dynamic  0.961   1.000      0.92x        2.24x
                              static   0.958   0.997      0.91x        2.34x
    cnn1d 16x2    (0.444)     dynamic  0.436   0.964      2.43x        0.17x
                              static   0.433   0.958      1.27x        1.04x
    cnn1d 16x2 on (8, 8)      dynamic  0.972   1.000      1.83x        0.34x
                  (0.972)     static   0.972   1.000      1.33x        3.52x
    cnn1d 32x3    (0.728)     dynamic  0.719   0.972      3.61x        0.19x
                              static   0.728   0.972      0.90x        2.34x

(Relative to the float model: below 1x is faster for latency, above 1x is faster for
throughput. cnn1d reads a flat row as one 64-long channel, "on (8, 8)" as 8 channels of 8.
15 epochs of cross-entropy, 40 for the flat cnn1d 16x2.)

With Conv layers, dynamic mode's ConvInteger runs at 0.17-0.34x the float throughput while
static QDQ keeps or beats it (1.04-3.52x) at the same accuracy: Conv -> static. On an MLP both
modes run at the same speed, but dynamic needs no calibration and follows the float logits
more closely (max |logit difference| 0.13 vs 2.7 on mlp [256, 256], where a range calibrated
on 256 rows clips): MatMul/Gemm only -> dynamic. At batch 1 these students take microseconds,
per-op overhead dominates and int8's extra quantize ops can cost more than they save; the gain
is in throughput. Per-channel weights were no better (flat cnn1d agreement 0.93 vs 0.96, on
(8, 8) 3.04x vs 3.52x throughput), so they stay off.

ORT's quant_pre_process (symbolic shape inference and graph optimisation) is not run: on these
graphs it changed neither accuracy nor speed, only trimmed 1-7 % off the file size, and the
dynamo exporter's graphs quantize without it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from distill.batches import Rows
from distill.errors import DistillError
from distill.onnx_safety import read_onnx
from distill.teachers import check_io, fit_samples, make_session

Mode = Literal["dynamic", "static"]
CALIBRATION_BATCH = 64
# Ops that show the graph really computes in int8 (dynamic: *Integer, static: Q/DQ pairs).
INT8_OPS = {"MatMulInteger", "ConvInteger", "QuantizeLinear", "QLinearConv", "QLinearMatMul"}
REASONS: dict[Mode, str] = {
    "static": (
        "The model has convolutions, which ONNX Runtime runs fast in int8 only with activation "
        "ranges calibrated ahead of time, so it was quantized statically on training samples."
    ),
    "dynamic": (
        "The model's layers are matrix multiplications only, so its weights were stored in int8 "
        "and its activations are quantized per batch at run time, which needs no calibration "
        "data and keeps the float model's predictions."
    ),
}


@dataclass(frozen=True)
class QuantResult:
    mode: str  # "dynamic" | "static" (the mode tried; the requested one if none could be)
    reason: str  # one sentence for the report: why this mode
    path: Path | None  # the int8 model, None when quantization failed
    error: str | None  # one sentence when it failed; the float model stays the one to use


def _ops(model: onnx.ModelProto) -> set[str]:
    """Op types of the main graph and of local functions (the dynamo exporter may put layers
    into functions)."""
    ops = {node.op_type for node in model.graph.node}
    for function in model.functions:
        ops |= {node.op_type for node in function.node}
    return ops


def choose_mode(model_path: str | os.PathLike) -> tuple[Mode, str]:
    """The int8 mode for a model and the sentence that explains it: static for graphs with
    Conv, dynamic otherwise (the figures are in the module docstring). Raises DistillError
    for a file that is not a readable ONNX model."""
    mode: Mode = "static" if "Conv" in _ops(read_onnx(model_path)[1]) else "dynamic"
    return mode, REASONS[mode]


class _Rows(CalibrationDataReader):
    """Calibration batches for quantize_static: the calibrator only needs each activation's
    range, so rows go in batches rather than one by one."""

    def __init__(self, name: str, rows: np.ndarray, fixed: int | None) -> None:
        # A fixed-batch model takes full batches only: a last partial one is left out.
        batch = fixed or CALIBRATION_BATCH
        end = len(rows) - batch + 1 if fixed else len(rows)
        self._feeds = iter([{name: rows[i : i + batch]} for i in range(0, end, batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _calibration_rows(
    shape: list[int | None], dtype: type, calibration: np.ndarray | Rows, n: int, seed: int
) -> np.ndarray:
    """`n` rows of `calibration` drawn with `seed`, in the model's sample shape and dtype; a
    fixed-batch model gets at least one full batch (rows repeated)."""
    if calibration.ndim < 2 or len(calibration) == 0 or n < 1:
        raise DistillError(
            f"Static int8 quantization needs at least one calibration row, got an array of "
            f"shape {list(calibration.shape)} and calibration_samples={n}."
        )
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(calibration), size=min(n, len(calibration)), replace=False))
    rows = fit_samples(np.asarray(calibration[picked]), shape[1:], "model")  # (k, ...)
    if shape[0] is not None and len(rows) < shape[0]:
        rows = rows[np.arange(shape[0]) % len(rows)]
    return np.ascontiguousarray(rows, dtype=dtype)


class _DropPreprocessHint(logging.Filter):
    """ORT logs "Please consider to run pre-processing" on the root logger for every call;
    the module docstring says why it is not run, so the worker's log need not repeat it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


@contextmanager
def _quiet_ort() -> Iterator[None]:
    hint = _DropPreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def _check_quantized(path: Path, probe: np.ndarray) -> None:
    """The int8 file must be one self-contained file that a plain CPU session loads and runs,
    and must really compute in int8."""
    _, model = read_onnx(path)  # refuses external data
    if not _ops(model) & INT8_OPS:
        raise DistillError(
            "The model has no layers ONNX Runtime quantizes to int8 (MatMul, Gemm or Conv), "
            "so there is no int8 variant; use the float model."
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out, *_) = session.run(None, {session.get_inputs()[0].name: probe})
    if not np.isfinite(out).all():
        raise DistillError("The int8 model produces NaN or infinite outputs; use the float model.")


def quantize(
    model_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    mode: Literal["auto", "dynamic", "static"] = "auto",
    calibration: np.ndarray | Rows | None = None,
    calibration_samples: int = 256,
    seed: int = 0,
) -> QuantResult:
    """Write the int8 variant of an ONNX model to `out_path` (one self-contained file).

    `mode` "auto" follows choose_mode. Static mode calibrates on `calibration_samples` rows of
    `calibration` (training rows (N, ...)) drawn with `seed`. Never raises for a model that
    cannot be quantized: the result then has path None and an `error` sentence, so a job
    whose int8 variant fails still delivers its float model."""
    chosen: str = mode
    reason = ""
    with tempfile.TemporaryDirectory(prefix="stillhouse-int8-") as tmp:
        try:
            data, model = read_onnx(model_path)  # refuses external data before ORT sees it
            if mode == "auto":
                chosen, reason = choose_mode(model_path)
            elif mode in ("dynamic", "static"):
                reason = f"The {mode} int8 mode was asked for."
            else:
                raise DistillError(
                    f"Unknown int8 mode {mode!r}; valid modes are auto, dynamic and static."
                )
            name, shape, dtype = check_io(make_session(data, "cpu"))
            # One batch the int8 model must run on: real rows when there are some.
            probe: np.ndarray = np.zeros((shape[0] or 1, *(d or 1 for d in shape[1:])), dtype=dtype)
            tmp_out = Path(tmp) / "int8.onnx"
            with _quiet_ort():
                if chosen == "static":
                    if calibration is None:
                        raise DistillError(
                            "Static int8 quantization needs calibration data (training rows); "
                            "give the training data or use the dynamic mode."
                        )
                    rows = _calibration_rows(shape, dtype, calibration, calibration_samples, seed)
                    probe = rows[: shape[0] or len(rows)]
                    quantize_static(
                        model,
                        tmp_out,
                        _Rows(name, rows, shape[0]),
                        quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                        per_channel=False,
                    )
                else:
                    quantize_dynamic(model, tmp_out, weight_type=QuantType.QInt8)
            _check_quantized(tmp_out, probe)
            out = Path(out_path)
            shutil.copyfile(tmp_out, out)
            return QuantResult(mode=chosen, reason=reason, path=out, error=None)
        except DistillError as exc:
            return QuantResult(mode=chosen, reason=reason, path=None, error=str(exc))
        except Exception as exc:  # onnxruntime.quantization raises many error types
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
            return QuantResult(
                mode=chosen,
                reason=reason,
                path=None,
                error=(
                    f"ONNX Runtime could not quantize the model to int8 ({detail}); "
                    "the float model is unaffected and is the one to use."
                ),
            )
