"""The job's report, as `GET /v1/jobs/{id}/report` serves it: the teacher, the
distilled student, the no-KD baseline and the student's int8 variant side by
side, with what distillation bought in speed and size.

    {"teacher": {...}, "student": {...}, "baseline": {...} | null,
     "student_int8": {...} | null, "speedup": teacher p50 / student p50,
     "compression": teacher params / student params,
     "benchmark": {"pool", "device", "device_name", "threads", "runtime", "versions", "batch"},
     "export": {"parity_max_abs_diff"}, "quantization": {"mode", "reason", "kept", "note"},
     "teacher_outputs": "cached" | "online", "task": "classification" | "regression"}

Each entry is {"accuracy", "agreement", "kl_to_teacher", "ece", "params", "bytes",
"latency_ms": {"p50", "p95"}, "throughput": {"samples_per_s", "batch"}, "eager": ...}:
the figures in ONNX Runtime, and under "eager" the same in torch eager (null where
the model has no eager form). A figure that does not apply is null. The gateway adds
the job's `stages` when it serves the report.

Each entry also has "per_class_accuracy" (a list indexed by class; null for a class without a
validation row) and "num_classes" where labels exist, and, for a "regression" job (mse_logits
its only loss term), "mse_to_teacher" and "r2_to_teacher". The student and the baseline add
"selected" ({"epoch", "by"[, "note"]}: the epoch whose weights were exported and are scored
here), "last_epoch" ({"epoch", "accuracy", "agreement", "kl"}: the validation figures of the
run's last epoch, for comparison), "early_stopped" ({"epoch", "metric", "reason"} | null) and
"epochs_run"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.benchmark import Measurement

METRICS = (
    "accuracy",
    "agreement",
    "kl_to_teacher",
    "ece",
    "per_class_accuracy",
    "num_classes",
    "mse_to_teacher",
    "r2_to_teacher",
)
# What the training stage records of each run's epochs (workers.stages.training).
RUN_FIELDS = ("selected", "last_epoch", "early_stopped", "epochs_run")
ENTRIES = ("teacher", "student", "baseline", "student_int8")


@dataclass(frozen=True)
class Entry:
    metrics: dict[str, Any]  # from distill.evaluate; missing keys do not apply
    params: int | None
    bytes: int | None
    onnx: Measurement | None  # ONNX Runtime
    eager: Measurement | None  # torch eager

    def to_json(self) -> dict[str, Any]:
        timing = _timing(self.onnx)
        return {
            **{name: self.metrics.get(name) for name in METRICS},
            "params": self.params,
            "bytes": self.bytes,
            **timing,
            "eager": _timing(self.eager) if self.eager is not None else None,
        }


def _timing(measured: Measurement | None) -> dict[str, Any]:
    if measured is None:
        return {"latency_ms": None, "throughput": None}
    return measured.to_json()


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 3)


def _p50(measured: Measurement) -> float:
    return float(measured.to_json()["latency_ms"]["p50"])


def _speedup(teacher: Entry, student: Entry) -> float | None:
    """Teacher p50 / student p50 at batch 1, both in ONNX Runtime, else both in torch
    eager (a torch program teacher has no ONNX form)."""
    for runtime in ("onnx", "eager"):
        slow, fast = getattr(teacher, runtime), getattr(student, runtime)
        if slow is not None and fast is not None:  # the figures as the report shows them
            return _ratio(_p50(slow), _p50(fast))
    return None


def build_report(
    entries: dict[str, Entry],
    benchmark: dict[str, Any],
    export: dict[str, Any],
    quantization: dict[str, Any],
    teacher_outputs: str,
    runs: dict[str, dict[str, Any] | None] | None = None,
    task: str = "classification",
) -> dict[str, Any]:
    """The report; `runs` holds the training stage's record of "student" and "baseline"."""
    teacher, student = entries["teacher"], entries["student"]
    tables = {name: entries[name].to_json() if name in entries else None for name in ENTRIES}
    for name in ("student", "baseline"):
        record = (runs or {}).get(name) or {}
        table = tables[name]
        if table is not None:
            table.update({key: record.get(key) for key in RUN_FIELDS})
    return {
        **tables,
        "speedup": _speedup(teacher, student),
        "compression": _ratio(teacher.params, student.params),
        "benchmark": benchmark,
        "export": export,
        "quantization": quantization,
        "teacher_outputs": teacher_outputs,
        "task": task,
    }
