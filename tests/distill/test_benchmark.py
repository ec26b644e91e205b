"""Latency and throughput measurement of ONNX and torch models (figures only sanity-checked:
speed targets belong in bench/)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from distill.benchmark import Measurement, measure_onnx, measure_torch, runtime_info
from distill.errors import DistillError
from distill.export import export_onnx
from distill.students import build_student

SECONDS = 0.05  # enough for the minimum run counts of a tiny model


@pytest.fixture(scope="module")
def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_student("mlp", {"hidden": [16]}, (8,), 3).eval()


@pytest.fixture(scope="module")
def mlp_onnx(mlp: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "mlp.onnx"
    export_onnx(mlp, (8,), path)
    return path


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(10, 8)).astype(np.float32)


def check_figures(m: Measurement, batch: int) -> None:
    assert m.p50_ms > 0 and m.p95_ms >= m.p50_ms
    assert m.samples_per_s > 0
    assert m.batch == batch
    assert m.runs >= 20


def test_measure_onnx(mlp_onnx: Path, rows: np.ndarray) -> None:
    m = measure_onnx(mlp_onnx, rows, batch=32, threads=1, seconds=SECONDS)
    check_figures(m, 32)
    assert m.latency_batch == 1
    js = m.to_json()
    assert js["latency_ms"]["p50"] == pytest.approx(m.p50_ms, rel=1e-3)  # 4 significant digits
    assert js["throughput"] == {"samples_per_s": round(m.samples_per_s, 1), "batch": 32}
    # The same model as bytes, with rows of another dtype: cast to the model's float32.
    m = measure_onnx(mlp_onnx.read_bytes(), rows.astype(np.float64), batch=4, seconds=SECONDS)
    check_figures(m, 4)


def test_measure_torch_restores_threads(mlp: torch.nn.Module, rows: np.ndarray) -> None:
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    mlp.train()
    m = measure_torch(mlp, rows, batch=16, threads=wanted, seconds=SECONDS)
    check_figures(m, 16)
    assert torch.get_num_threads() == before
    assert mlp.training  # the caller's mode comes back too
    mlp.eval()


def test_fixed_batch_model_runs_at_its_own_batch(tmp_path: Path, rows: np.ndarray) -> None:
    path = tmp_path / "fixed.onnx"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
        torch.onnx.export(model, (torch.zeros(4, 8),), str(path), dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [4, 8]
    m = measure_onnx(path, rows, batch=256, seconds=SECONDS)
    check_figures(m, 4)
    assert m.latency_batch == 4 and m.to_json()["latency_ms"]["batch"] == 4


def test_bad_input_shape(mlp: torch.nn.Module, mlp_onnx: Path) -> None:
    wrong = np.zeros((3, 7), dtype=np.float32)
    with pytest.raises(DistillError, match=r"have shape \[7\] but the model expects \[8\]"):
        measure_onnx(mlp_onnx, wrong, seconds=SECONDS)
    with pytest.raises(DistillError, match=r"The model failed on samples of shape \[7\]"):
        measure_torch(mlp, wrong, seconds=SECONDS)
    with pytest.raises(DistillError, match="non-empty array of rows"):
        measure_onnx(mlp_onnx, np.zeros(8, dtype=np.float32), seconds=SECONDS)


def test_runtime_info() -> None:
    info = runtime_info("cpu", 3)
    assert info["device"] == "cpu" and info["threads"] == 3
    assert info["device_name"] and info["runtime"] == f"onnxruntime {ort.__version__}"
    assert set(info["versions"]) == {"onnxruntime", "torch", "numpy", "python", "onnx"}
    assert "CPUExecutionProvider" in info["providers"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert runtime_info("cuda", None)["device"] == "cpu"  # says where it really ran
