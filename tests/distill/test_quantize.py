"""int8 variants with ONNX Runtime's quantization: the mode each student gets, and that the
quantized file runs on its own and predicts like the float model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.datasets import load_digits

from distill.export import export_onnx
from distill.quantize import QuantResult, choose_mode, quantize
from distill.students import build_student

Digits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def digits() -> Digits:
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)  # (1797, 64)
    order = np.random.default_rng(0).permutation(len(x))
    val, train = order[:360], order[360:]
    return x[train], data.target[train], x[val], data.target[val]


def trained_onnx(
    folder: Path, digits: Digits, arch: str, params: dict, shape: tuple[int, ...], epochs: int
) -> Path:
    x, y = torch.from_numpy(digits[0]).reshape(-1, *shape), torch.from_numpy(digits[1])
    torch.manual_seed(0)
    model = build_student(arch, params, shape, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    path = folder / f"{arch}.onnx"
    export_onnx(model.eval(), shape, path)
    return path


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory, digits: Digits) -> Path:
    return trained_onnx(tmp_path_factory.mktemp("mlp"), digits, "mlp", {"hidden": [64]}, (64,), 5)


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory: pytest.TempPathFactory, digits: Digits) -> Path:
    # Digits as 8 rows of 8 pixels: channels = image rows, a signal along the columns.
    folder = tmp_path_factory.mktemp("cnn")
    return trained_onnx(folder, digits, "cnn1d", {"channels": 16}, (8, 8), 5)


def logits(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    shape = [d if isinstance(d, int) else -1 for d in session.get_inputs()[0].shape]
    return session.run(None, {name: x.reshape(shape)})[0]  # (N, C)


def check_int8(result: QuantResult, float_path: Path, digits: Digits) -> None:
    """The int8 file runs in a plain CPU session, alone, and predicts like the float model."""
    assert result.error is None and result.path is not None and result.path.exists()
    x_val, y_val = digits[2], digits[3]
    ref, got = logits(float_path, x_val), logits(result.path, x_val)
    ref_acc, int8_acc = (ref.argmax(1) == y_val).mean(), (got.argmax(1) == y_val).mean()
    assert ref_acc > 0.5  # the student learned something, so the comparison means something
    assert abs(int8_acc - ref_acc) <= 0.03
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95
    assert not list(result.path.parent.glob("*.data"))  # no external-data side file


def test_mlp_is_quantized_dynamically(mlp_onnx: Path, digits: Digits, tmp_path: Path) -> None:
    mode, reason = choose_mode(mlp_onnx)
    assert mode == "dynamic" and reason.endswith(".")
    result = quantize(mlp_onnx, tmp_path / "int8.onnx")
    assert (result.mode, result.reason) == (mode, reason)
    check_int8(result, mlp_onnx, digits)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]


def test_cnn_is_quantized_statically(cnn_onnx: Path, digits: Digits, tmp_path: Path) -> None:
    mode, reason = choose_mode(cnn_onnx)
    assert mode == "static" and "convolutions" in reason
    result = quantize(cnn_onnx, tmp_path / "int8.onnx", calibration=digits[0], seed=1)
    assert result.mode == "static"
    check_int8(result, cnn_onnx, digits)


def test_static_needs_calibration(mlp_onnx: Path, tmp_path: Path) -> None:
    result = quantize(mlp_onnx, tmp_path / "int8.onnx", mode="static")
    assert result.path is None and result.mode == "static"
    assert result.error is not None and "needs calibration data" in result.error
    assert not (tmp_path / "int8.onnx").exists()


def test_broken_model_gives_an_error_not_an_exception(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    result = quantize(junk, tmp_path / "int8.onnx")
    assert result.path is None
    assert result.error is not None and "not a valid ONNX model" in result.error
    assert not (tmp_path / "int8.onnx").exists()
