"""The .npz loader: valid files and every error path a user can hit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.data import inspect_npz, load_npz
from distill.errors import DistillError


def save(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_load_converts_dtypes(tmp_path: Path) -> None:
    path = save(
        tmp_path, x=np.arange(12, dtype=np.int16).reshape(3, 2, 2), y=np.array([0.0, 2.0, 1.0])
    )
    x, y = load_npz(path)
    # Integer inputs stay exact, as int64 (token ids); the model casts what it reads.
    assert x.dtype == np.int64 and x.shape == (3, 2, 2) and x.ravel().tolist() == list(range(12))
    assert y is not None and y.dtype == np.int64 and y.tolist() == [0, 2, 1]


def test_unlabeled_and_inspect(tmp_path: Path) -> None:
    x, y = load_npz(save(tmp_path, x=np.zeros((5, 4), dtype=np.float64)))
    assert y is None and x.shape == (5, 4)
    info = inspect_npz(
        save(tmp_path, x=np.ones((6, 3, 2), dtype=np.uint8), y=np.array([0, 4, 1, 1, 2, 0]))
    )
    assert info.num_samples == 6 and info.sample_shape == (3, 2)
    assert info.num_classes == 5 and info.labeled and info.x_dtype == "uint8"
    assert inspect_npz(save(tmp_path, x=np.ones((2, 1)))).num_classes is None


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"inputs": np.zeros((2, 2))}, 'no array named "x" \\(found: inputs\\)'),
        ({"x": np.array([{"a": 1}, {"b": 2}], dtype=object)}, "object dtype"),
        ({"x": np.array([[1.0, np.nan], [0.0, 1.0]])}, "NaN or infinite values in 1 sample"),
        ({"x": np.array([[1.0, np.inf]])}, "NaN or infinite"),
        ({"x": np.zeros((0, 3))}, "N > 0"),
        ({"x": np.array(["a", "b"]).reshape(2, 1)}, "not numeric"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1])}, "has 3 samples"),
        ({"x": np.zeros((2, 2)), "y": np.array([0, -1])}, "negative labels"),
        ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, "non-integer"),
        ({"x": np.zeros((2, 2)), "y": np.zeros((2, 2), dtype=np.int64)}, "1-D array"),
    ],
)
def test_load_errors(tmp_path: Path, arrays: dict[str, np.ndarray], fragment: str) -> None:
    path = save(tmp_path, **arrays)
    with pytest.raises(DistillError, match=fragment):
        load_npz(path)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04broken"])
def test_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(DistillError, match="not a .*npz archive") as info:
        load_npz(path)
    assert str(info.value).endswith(".")


def test_single_npy_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "one.npy"
    np.save(path, np.zeros((2, 2)))
    with pytest.raises(DistillError, match="single .npy array"):
        load_npz(path)
    with pytest.raises(DistillError, match="does not exist"):
        load_npz(tmp_path / "missing.npz")
