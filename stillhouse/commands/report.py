"""`stillhouse jobs report ID`: teacher, distilled student, no-KD baseline and the
student's int8 variant side by side, as one table and a few lines of context."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from stillhouse.commands.common import size, stdout

ROWS = (
    ("teacher", "teacher"),
    ("student", "student (distilled)"),
    ("baseline", "baseline (no KD)"),
    ("student_int8", "student int8"),
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _latency(entry: dict[str, Any]) -> tuple[str, str, str]:
    latency = entry.get("latency_ms") or {}
    throughput = entry.get("throughput") or {}
    rate = throughput.get("samples_per_s")
    return (
        _num(latency.get("p50"), 3),
        _num(latency.get("p95"), 3),
        "-" if rate is None else f"{rate:,.0f}/s @{throughput.get('batch')}",
    )


def print_report(report: dict[str, Any], job_id: str) -> None:
    grid = Table(title=f"job {job_id}", box=None, header_style="bold", pad_edge=False)
    for column in ("MODEL", "ACCURACY", "AGREEMENT", "KL", "ECE", "PARAMS", "SIZE"):
        grid.add_column(column, justify="left" if column == "MODEL" else "right")
    for column in ("P50 MS", "P95 MS", "THROUGHPUT"):
        grid.add_column(column, justify="right")
    for key, label in ROWS:
        entry = report.get(key)
        if not entry:
            continue
        grid.add_row(
            label,
            _pct(entry.get("accuracy")),
            _pct(entry.get("agreement")),
            _num(entry.get("kl_to_teacher")),
            _num(entry.get("ece")),
            "-" if entry.get("params") is None else f"{entry['params']:,}",
            size(entry.get("bytes")),
            *_latency(entry),
        )
    out = stdout()
    out.print(grid)
    notes = []
    if report.get("speedup") is not None:
        notes.append(f"speedup {report['speedup']:.1f}x (teacher p50 / student p50)")
    if report.get("compression") is not None:
        notes.append(f"compression {report['compression']:.1f}x (teacher / student params)")
    bench = report.get("benchmark") or {}
    if bench:
        device = bench.get("device_name") or bench.get("device")
        notes.append(
            f"benchmark on pool {bench.get('pool')} ({device}, {bench.get('runtime')}, "
            f"{bench.get('threads')} threads)"
        )
    parity = (report.get("export") or {}).get("parity_max_abs_diff")
    if parity is not None:
        notes.append(f"ONNX export parity: max |torch - onnx| = {parity:.2e}")
    quant = report.get("quantization") or {}
    if quant.get("kept") is False and quant.get("note"):
        notes.append(f"int8: {quant['note']}")
    for entry_key in ("student", "baseline"):
        selected = (report.get(entry_key) or {}).get("selected")
        if selected:
            notes.append(
                f"{entry_key}: weights of epoch {selected['epoch']} (best {selected['by']})"
            )
    for note in notes:
        out.print(note, markup=False)
