"""Int64 token ids through the engine: an int64-input ONNX teacher, training a token
student (never cast to float), prediction, export parity and int8 quantization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distill.errors import DistillError
from distill.evaluate import predict_logits
from distill.export import export_onnx, parity_max_abs_diff
from distill.loop import TrainConfig, train
from distill.losses import build_loss
from distill.quantize import quantize
from distill.students import build_student
from distill.teachers import OnnxTeacher, inspect_onnx

VOCAB, T, CLASSES = 16, 8, 3


@pytest.fixture(scope="module")
def token_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_student("gru", {"hidden": 8, "vocab_size": VOCAB}, (T,), CLASSES).eval()
    path = tmp_path_factory.mktemp("teacher") / "teacher.onnx"
    export_onnx(model, (T,), path)
    return path


def _ids(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(n, T), dtype=np.int64)


def test_an_int64_teacher_is_fed_ids_and_refuses_floats(token_teacher: Path) -> None:
    info = inspect_onnx(token_teacher)
    assert info.input_dtype == "int64" and info.input_shape == [None, T]
    teacher = OnnxTeacher(token_teacher)
    logits = teacher.predict_logits(_ids(10, 0))
    assert logits.shape == (10, CLASSES) and logits.dtype == np.float32
    with pytest.raises(DistillError, match="reads int64 token ids but the data holds float32"):
        teacher.predict_logits(_ids(4, 1).astype(np.float32))


def test_a_token_student_trains_exports_and_quantizes(token_teacher: Path, tmp_path: Path) -> None:
    x, xv = _ids(64, 2), _ids(16, 3)
    teacher = OnnxTeacher(token_teacher)
    t, tv = teacher.predict_logits(x), teacher.predict_logits(xv)
    y = t.argmax(1)
    student = build_student(
        "transformer",
        {"d_model": 8, "heads": 2, "layers": 1, "ff": 16, "vocab_size": VOCAB},
        (T,),
        CLASSES,
    )
    loss = build_loss([{"name": "kd", "weight": 1.0, "temperature": 2.0}])
    result = train(
        student, x, y, t, loss, TrainConfig(epochs=2, batch_size=16), val=(xv, tv.argmax(1), tv)
    )
    assert result.epochs_completed == 2
    assert np.isfinite(predict_logits(student, xv)).all()
    path = tmp_path / "student.onnx"
    export_onnx(student, (T,), path)
    assert parity_max_abs_diff(student, path, xv) < 1e-5
    quantized = quantize(path, tmp_path / "int8.onnx", calibration=x)
    assert quantized.error is None or "int8" in quantized.error  # a verdict, never a raise


def test_ids_outside_the_vocabulary_are_refused_before_training() -> None:
    student = build_student("gru", {"hidden": 4, "vocab_size": VOCAB}, (T,), CLASSES)
    x = _ids(8, 4)
    x[3, 2] = VOCAB
    loss = build_loss([{"name": "ce", "weight": 1.0}])
    with pytest.raises(DistillError, match="vocab_size is 16; set vocab_size above the largest id"):
        train(student, x, np.zeros(8, np.int64), None, loss, TrainConfig(epochs=1))
    noisy = TrainConfig(epochs=1, augment_noise=0.1)
    with pytest.raises(DistillError, match="reads token ids"):
        train(student, _ids(8, 5), np.zeros(8, np.int64), None, loss, noisy)
