"""The job's report, as `GET /v1/jobs/{id}/report` serves it: the teacher, the
distilled student, the no-KD baseline and the student's int8 variant side by
side, with what distillation bought in speed and size.

    {"teacher": {...}, "student": {...}, "baseline": {...} | null,
     "student_int8": {...} | null, "speedup": teacher p50 / student p50,
     "compression": teacher params / student params,
     "benchmark": {"pool", "device", "device_name", "threads", "runtime", "versions", "batch"},
     "export": {"parity_max_abs_diff"}, "quantization": {"mode", "reason", "kept", "note"},
     "teacher_outputs": "cached" | "online"}

Each entry is {"accuracy", "agreement", "kl_to_teacher", "ece", "params", "bytes",
"latency_ms": {"p50", "p95"}, "throughput": {"samples_per_s", "batch"}, "eager": ...}:
the figures in ONNX Runtime, and under "eager" the same in torch eager (null where
the model has no eager form). A figure that does not apply is null. The gateway adds
the job's `stages` when it serves the report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.benchmark import Measurement

METRICS = ("accuracy", "agreement", "kl_to_teacher", "ece")
ENTRIES = ("teacher", "student", "baseline", "student_int8")


@dataclass(frozen=True)
class Entry:
    metrics: dict[str, float]  # from distill.evaluate; missing keys do not apply
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
) -> dict[str, Any]:
    teacher, student = entries["teacher"], entries["student"]
    return {
        **{name: entries[name].to_json() if name in entries else None for name in ENTRIES},
        "speedup": _speedup(teacher, student),
        "compression": _ratio(teacher.params, student.params),
        "benchmark": benchmark,
        "export": export,
        "quantization": quantization,
        "teacher_outputs": teacher_outputs,
    }
