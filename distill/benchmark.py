"""Latency and throughput of a model where it runs: ONNX Runtime or eager PyTorch, CPU or CUDA.

Two figures, from one time budget split in half:

- latency: one call on the smallest batch the model takes (one sample, or a fixed-batch
  model's own batch), each call timed on its own; p50 and p95 over the calls.
- throughput: back-to-back calls on a full batch of `batch` samples; samples / total time.

Both use real samples (e.g. validation rows) rather than zeros: a ReLU net's sparsity, and so
its speed on some kernels, depends on the data. Every input is prepared before the clock
starts, so the figures time the model and its runtime, not numpy copies.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from distill.errors import DistillError
from distill.onnx_safety import read_onnx
from distill.students import input_dtype
from distill.teachers import cast_inputs, check_io, fit_samples, make_session

MIN_LATENCY_RUNS, MAX_LATENCY_RUNS, MIN_BATCH_RUNS = 20, 10_000, 3
# Distinct single-sample inputs cycled through by the latency runs: enough to not measure one
# row's cache-warm luck, few enough to prepare up front for any data set size.
MAX_DISTINCT = 256


@dataclass(frozen=True)
class Measurement:
    p50_ms: float
    p95_ms: float
    samples_per_s: float
    batch: int  # samples per throughput call: as asked, or a fixed-batch model's own batch
    runs: int  # latency samples taken
    latency_batch: int = 1  # samples per latency call: 1, or a fixed-batch model's own batch

    def to_json(self) -> dict[str, dict[str, float | int]]:
        return {
            # Four significant digits, not decimals: a microsecond model's p50 (0.0043 ms)
            # keeps its precision, and a ratio of two of them stays within 0.1 %.
            "latency_ms": {
                "p50": float(f"{self.p50_ms:.4g}"),
                "p95": float(f"{self.p95_ms:.4g}"),
                "batch": self.latency_batch,
            },
            "throughput": {"samples_per_s": round(self.samples_per_s, 1), "batch": self.batch},
        }


def _check_args(
    sample: np.ndarray, batch: int, threads: int | None, seconds: float, warmup: int
) -> None:
    if sample.ndim < 2 or len(sample) == 0:
        raise DistillError(
            f"Benchmark samples must be a non-empty array of rows (n, ...), got shape "
            f"{list(sample.shape)}; pass validation rows, not a single sample."
        )
    if batch < 1 or (threads is not None and threads < 1) or seconds <= 0 or warmup < 0:
        raise DistillError(
            f"A benchmark needs batch >= 1, threads >= 1 (or None), seconds > 0 and "
            f"warmup >= 0, got batch={batch}, threads={threads}, seconds={seconds}, "
            f"warmup={warmup}."
        )


def _rows(x: np.ndarray, n: int) -> np.ndarray:
    """n rows of x, tiled when x has fewer: (n, ...) contiguous."""
    return np.ascontiguousarray(x[np.arange(n) % len(x)])


def _timed(run: Callable[[int], None], budget_ns: int, min_runs: int, max_runs: int) -> np.ndarray:
    """Call run(i) for i = 0, 1, ... until the budget is spent (within [min_runs, max_runs]);
    the duration of each call in ns."""
    times: list[int] = []
    end = time.perf_counter_ns() + budget_ns
    clock = time.perf_counter_ns
    while len(times) < min_runs or (len(times) < max_runs and clock() < end):
        start = clock()
        run(len(times))
        times.append(clock() - start)
    return np.asarray(times, dtype=np.float64)


def _measure(
    single: Callable[[int], None],
    full: Callable[[int], None],
    batch: int,
    latency_batch: int,
    seconds: float,
    warmup: int,
) -> Measurement:
    for i in range(warmup):  # first calls allocate buffers and pick kernels for each shape
        single(i)
        full(i)
    half = int(seconds * 1e9 / 2)
    latency = _timed(single, half, MIN_LATENCY_RUNS, MAX_LATENCY_RUNS) / 1e6  # (runs,) ms
    throughput = _timed(full, half, MIN_BATCH_RUNS, sys.maxsize)  # (runs,) ns
    p50, p95 = np.percentile(latency, [50, 95])
    return Measurement(
        p50_ms=float(p50),
        p95_ms=float(p95),
        samples_per_s=float(batch * len(throughput) / (throughput.sum() / 1e9)),
        batch=batch,
        runs=len(latency),
        latency_batch=latency_batch,
    )


def _probe_and_measure(
    run: Callable[[Any], None],
    singles: Sequence[Any],
    full: Any,
    latency_batch: int,
    seconds: float,
    warmup: int,
    hint: str,
) -> Measurement:
    """One call first, so a model that cannot take these rows fails with a sentence (the
    runtimes raise many untyped errors), then the timed runs."""
    try:
        run(singles[0])
    except Exception as exc:
        raise DistillError(
            f"The model failed on samples of shape {list(full.shape[1:])} "
            f"({str(exc).strip()[:300]}); {hint}."
        ) from exc
    return _measure(
        lambda i: run(singles[i % len(singles)]),
        lambda i: run(full),
        len(full),
        latency_batch,
        seconds,
        warmup,
    )


def measure_onnx(
    model: bytes | str | os.PathLike,
    sample: np.ndarray,
    *,
    batch: int = 256,
    threads: int | None = None,
    device: str = "cpu",
    seconds: float = 1.0,
    warmup: int = 5,
) -> Measurement:
    """Latency and throughput of an ONNX model in ONNX Runtime on `device` (CUDA when asked
    for and available, else CPU), with `threads` intra-op threads (None: one per core).

    `sample` holds real rows (n, ...) shaped like the model's input (or with as many values
    per row). A model with a fixed batch dim runs at that batch for both figures, which the
    returned `batch` and `latency_batch` report. On CUDA a call includes copying its input
    to the GPU and the output back, as a served model's calls do."""
    sample = np.asarray(sample)
    _check_args(sample, batch, threads, seconds, warmup)
    data = model if isinstance(model, bytes) else read_onnx(model)[0]
    session = make_session(data, device, threads)
    name, shape, dtype = check_io(session)
    x: np.ndarray = cast_inputs(fit_samples(sample, shape[1:], "model"), dtype, "model")  # (n, ...)
    fixed = shape[0]  # None: a dynamic batch dim
    batch, latency_batch = fixed or batch, fixed or 1
    singles = [_rows(x[i:], latency_batch) for i in range(min(len(x), MAX_DISTINCT))]
    full = _rows(x, batch)  # (batch, ...)

    def run(xb: np.ndarray) -> None:
        session.run(None, {name: xb})

    hint = f"pass rows that match its input shape {shape}"
    return _probe_and_measure(run, singles, full, latency_batch, seconds, warmup, hint)


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set for the block and restored after: it is process-wide,
    and a worker runs other stages with its own setting."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure_torch(
    model: nn.Module,
    sample: np.ndarray,
    *,
    batch: int = 256,
    threads: int | None = None,
    device: str = "cpu",
    seconds: float = 1.0,
    warmup: int = 5,
) -> Measurement:
    """Latency and throughput of an eager PyTorch model under inference_mode on `device`.

    The model is moved to `device` and put in eval mode (its train flag is restored after);
    `threads` sets torch's intra-op threads for the measurement only. On CUDA every call
    waits for the GPU before the clock is read, so a figure is compute, not a kernel launch."""
    sample = np.asarray(sample)
    _check_args(sample, batch, threads, seconds, warmup)
    was_training = model.training
    model = model.to(device)
    # A torch.export program's module has no train/eval switch (it was exported in one mode).
    with contextlib.suppress(NotImplementedError):
        model.eval()
    # A token student reads int64 ids; any other model its parameters' float type.
    dtype = input_dtype(model)
    if dtype != torch.int64:
        dtype = next(model.parameters(), torch.empty(0)).dtype
    x = torch.from_numpy(np.ascontiguousarray(sample)).to(device=device, dtype=dtype)  # (n, ...)
    singles = [x[i : i + 1] for i in range(min(len(x), MAX_DISTINCT))]  # (1, ...) each
    full = x[torch.arange(batch, device=x.device) % len(x)].contiguous()  # (batch, ...)
    cuda = x.device.type == "cuda"

    def run(xb: torch.Tensor) -> None:
        model(xb)
        if cuda:
            torch.cuda.synchronize(x.device)

    try:
        with _torch_threads(threads), torch.inference_mode():
            hint = "pass rows shaped like its input"
            return _probe_and_measure(run, singles, full, 1, seconds, warmup, hint)
    finally:
        with contextlib.suppress(NotImplementedError):
            model.train(was_training)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def runtime_info(device: str, threads: int | None) -> dict[str, Any]:
    """Where a measure_onnx figure was taken: the device it actually ran on (CPU when CUDA was
    asked for but this onnxruntime build or machine has none), its name, the thread count,
    and the versions a reader needs to compare two reports."""
    cuda = device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers()
    if cuda:
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        where = f"cuda:{index}"
        name = (
            torch.cuda.get_device_name(index)
            if torch.cuda.is_available()
            else f"CUDA device {index}"
        )
    else:
        where, name = "cpu", _cpu_name()
    return {
        "device": where,
        "device_name": name,
        "threads": threads or os.cpu_count() or 1,
        "runtime": f"onnxruntime {ort.__version__}",
        "versions": {
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "onnx": onnx.__version__,
        },
        "providers": ort.get_available_providers(),
    }
