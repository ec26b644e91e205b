"""Stage 4: export the trained student (and the baseline) to ONNX, check that
ONNX Runtime agrees with torch on the whole validation set, and build the
student's int8 variant with ONNX Runtime's quantization tools.

The int8 variant never fails the job: when it cannot be built, or when it
loses more validation accuracy than the job allows, the stage records a
sentence saying so and the student is offered in float only. The student's
model row is registered by the benchmark stage, the job's last."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from core.lifecycle import Claim
from core.queues import Stage
from core.spec import QuantizationSpec
from distill.batches import Rows
from distill.evaluate import evaluate
from distill.export import export_onnx, parity_max_abs_diff
from distill.quantize import quantize
from workers.context import WorkerContext
from workers.jobs import StopCheck
from workers.stages.inputs import SplitData, load_inputs, load_weights, split_data
from workers.stages.result import StageResult


def run_export(ctx: WorkerContext, claim: Claim, check: StopCheck) -> StageResult:
    trained, evaluated = claim.inputs[Stage.TRAINING.value], claim.inputs[Stage.EVALUATION.value]
    inputs = load_inputs(ctx, claim.spec)
    data = split_data(ctx, claim, inputs)
    shape = tuple(trained["spec"]["input_shape"])
    student, _ = load_weights(ctx, trained["student"]["weights"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        graph = folder / "student.onnx"
        export_onnx(student.cpu(), shape, graph)
        parity = parity_max_abs_diff(student, graph, data.x_val)
        onnx_key, _, _ = ctx.store.put_file(graph)
        check.raise_if_stopped()
        baseline_key = None
        if trained.get("baseline"):
            baseline, _ = load_weights(ctx, trained["baseline"]["weights"])
            export_onnx(baseline.cpu(), shape, folder / "baseline.onnx")
            baseline_key, _, _ = ctx.store.put_file(folder / "baseline.onnx")
            check.raise_if_stopped()
        int8 = _int8(ctx, graph, folder, inputs.spec.quantization, data, evaluated["student"])
    public_int8 = {k: int8[k] for k in ("mode", "reason", "kept", "note")}
    return StageResult(
        outputs={
            "onnx": onnx_key,
            "baseline_onnx": baseline_key,
            "int8": int8,
            "parity_max_abs_diff": parity,
            "details": {"parity_max_abs_diff": parity, "int8": public_int8},
        }
    )


def _int8(
    ctx: WorkerContext,
    graph: Path,
    folder: Path,
    options: QuantizationSpec,
    data: SplitData,
    student_metrics: dict[str, float],
) -> dict[str, Any]:
    """The int8 variant: its artifact key, metrics on the validation set, and whether it is
    kept (offered for download), with a sentence when it is not."""
    entry: dict[str, Any] = {"key": None, "mode": options.mode, "reason": None, "metrics": None}
    if options.mode == "off":
        return {**entry, "kept": False, "note": "Quantization was turned off for this job."}
    result = quantize(
        graph,
        folder / "student-int8.onnx",
        mode=options.mode,
        calibration=data.x,
        calibration_samples=options.calibration_samples,
    )
    entry.update(mode=result.mode, reason=result.reason)
    if result.path is None:
        failed = f"No int8 variant: quantization failed ({result.error})"
        return {**entry, "kept": False, "note": failed.rstrip(".") + "."}
    logits = _run(result.path, data.x_val)  # (M, C)
    # Scored like the student: as a regression when its metrics are (see core.spec task).
    metrics = evaluate(
        logits, data.y_val, data.t_val, regression="mse_to_teacher" in student_metrics
    )
    entry["metrics"] = metrics
    entry["key"], _, _ = ctx.store.put_file(result.path)
    refused = int8_verdict(student_metrics, metrics, options.max_accuracy_drop)
    return {**entry, "kept": refused is None, "note": refused}


def int8_verdict(student: dict[str, float], int8: dict[str, float], max_drop: float) -> str | None:
    """None when the int8 variant is kept; else the sentence that says why not. Without
    validation labels there is no accuracy to lose, and the variant is kept."""
    if "accuracy" not in student or "accuracy" not in int8:
        return None
    drop = student["accuracy"] - int8["accuracy"]
    if drop <= max_drop:
        return None
    return (
        f"The int8 variant loses {drop * 100:.1f} points of validation accuracy "
        f"({student['accuracy'] * 100:.1f}% to {int8['accuracy'] * 100:.1f}%), more than this "
        f"job's limit of {max_drop * 100:.1f}; it is not offered for download."
    )


def _run(path: Path, x: np.ndarray | Rows, batch_size: int = 1024) -> np.ndarray:
    """Logits (N, C) from an ONNX file on the CPU."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    # The graph's own input type: int64 token ids for an embedding student, else float32.
    dtype = np.int64 if session.get_inputs()[0].type == "tensor(int64)" else np.float32
    chunks = [
        session.run(None, {name: np.ascontiguousarray(x[i : i + batch_size], dtype)})[0]
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(chunks).astype(np.float32)  # (N, C)
