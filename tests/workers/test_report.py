"""The report's arithmetic: speedup and compression from the entries, nulls where a
figure does not apply, and the same runtime on both sides of the speedup."""

from __future__ import annotations

import pytest

from distill.benchmark import Measurement
from workers.stages.report import Entry, build_report

INFO = {
    "pool": "edge",
    "device": "cpu",
    "threads": 2,
    "runtime": "onnxruntime 1.32.0",
    "batch": 256,
}


def timing(p50: float) -> Measurement:
    return Measurement(p50_ms=p50, p95_ms=p50 * 1.5, samples_per_s=1000 / p50, batch=256, runs=20)


def report(teacher: Entry, student: Entry, **more: Entry) -> dict:
    return build_report(
        {"teacher": teacher, "student": student, **more},
        benchmark=INFO,
        export={"parity_max_abs_diff": 1e-6},
        quantization={"mode": "dynamic", "reason": "r", "kept": True, "note": None},
        teacher_outputs="cached",
    )


def test_speedup_and_compression_come_from_the_entries() -> None:
    teacher = Entry({"accuracy": 0.97}, 85_000, 340_000, timing(0.9), None)
    student = Entry({"accuracy": 0.95, "agreement": 0.96}, 2_410, 10_000, timing(0.1), timing(0.2))
    out = report(teacher, student)
    assert out["speedup"] == pytest.approx(9.0, abs=1e-3)
    assert out["compression"] == pytest.approx(85_000 / 2_410, abs=1e-3)
    assert out["baseline"] is None and out["student_int8"] is None
    assert out["teacher"]["agreement"] is None and out["teacher"]["eager"] is None
    assert out["teacher"]["kl_to_teacher"] is None and out["student"]["ece"] is None
    assert out["student"]["latency_ms"]["p50"] == 0.1
    assert out["student"]["eager"]["latency_ms"]["p50"] == 0.2
    assert out["student"]["throughput"] == {"samples_per_s": 10_000.0, "batch": 256}


def test_a_teacher_without_an_onnx_form_is_compared_in_eager() -> None:
    program = Entry({}, 100, 1_000, None, timing(4.0))  # a torch program teacher
    student = Entry({}, 10, 100, timing(0.1), timing(0.5))
    assert report(program, student)["speedup"] == pytest.approx(8.0, abs=1e-3)
    assert report(program, Entry({}, 10, 100, timing(0.1), None))["speedup"] is None


def test_unknown_sizes_give_no_ratio() -> None:
    teacher = Entry({}, None, None, timing(1.0), None)
    assert report(teacher, Entry({}, 10, 100, timing(0.5), None))["compression"] is None
