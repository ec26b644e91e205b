"""Dataset inspection in bounded memory: headers before data, chunks after, and
a child process under a memory ceiling."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from distill.errors import DistillError
from distill.inspector import InspectionStopped, Limits, inspect_isolated
from distill.npz_scan import inspect_npz
from tests.stack import inspector_processes

MiB = 1024**2


def save(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def zeros_npz(path: Path, shape: tuple[int, ...], dtype: type) -> Path:
    """An .npz whose "x" is zeros of `shape`, written in 16 MiB blocks: a large decoded
    array for the price of a small file, never whole in this process's memory."""
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": shape,
    }
    block = bytes(16 * MiB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            left = int(np.prod(shape)) * np.dtype(dtype).itemsize
            while left:
                member.write(block[: min(left, len(block))])
                left -= min(left, len(block))
    return path


def test_a_dtype_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    """1 MB of uint8 is 4 MB as float32: the sentence gives both, and the limit."""
    path = save(tmp_path, x=np.zeros((1000, 1000), np.uint8), y=np.zeros(1000, np.int8))
    with pytest.raises(DistillError) as info:
        inspect_npz(path, max_bytes=2_000_000)
    assert "take 1001000 bytes (977.5 KiB) once decompressed" in str(info.value)
    assert "4008000 bytes (3.8 MiB) once converted for training (x as float32, y as int64)" in str(
        info.value
    )
    assert "(2000000 bytes, 1.9 MiB)" in str(info.value)
    assert inspect_npz(path, max_bytes=5_000_000).num_samples == 1000


def test_half_a_gib_inspects_under_a_quarter_gib_ceiling(tmp_path: Path) -> None:
    """512 MiB of float64 (256 MiB as float32) cannot be loaded whole under a 256 MiB
    address-space ceiling, so passing proves the scan is chunked; a ceiling below what
    the scan needs ends in a sentence, not in a killed process."""
    path = zeros_npz(tmp_path / "big.npz", (4096, 16384), np.float64)
    info = inspect_isolated(path, Limits(2**40, 10, 256 * MiB))
    assert (info.num_samples, info.sample_shape, info.x_dtype) == (4096, (16384,), "float64")
    with pytest.raises(DistillError, match="needed more memory than an inspection may use"):
        inspect_isolated(path, Limits(2**40, 10, 64 * MiB))
    assert not inspector_processes(tmp_path)


def test_isolated_matches_in_process(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = save(tmp_path, x=rng.random((50, 3, 2)).astype(np.float16), y=rng.integers(0, 7, 50))
    assert inspect_isolated(path, Limits(2**30, 100, 2**30)) == inspect_npz(path)
    with pytest.raises(DistillError, match='"y" holds the label 6, but this server accepts at'):
        inspect_isolated(path, Limits(2**30, 6, 2**30))


def test_a_stopped_inspection_leaves_no_child(tmp_path: Path) -> None:
    path = save(tmp_path, x=np.ones((2, 2)))
    with pytest.raises(InspectionStopped):
        inspect_isolated(path, Limits(2**30, 10, 2**30), lambda: False, 0.1, pause_s=30)
    assert not inspector_processes(tmp_path)


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"x": np.zeros((5, 0))}, r"has shape \(5, 0\): its samples hold no values"),
        ({"x": np.zeros((4, 3, 0))}, "its samples hold no values"),
        ({"x": np.zeros((0, 3))}, "N > 0"),
        ({"x": np.zeros(3)}, "N > 0 samples and at least one feature"),
        ({"x": np.zeros((2, 2)), "y": np.array([0, 2**31])}, "holds the label 2147483648"),
        (
            {"x": np.zeros((2, 2)), "y": np.array([0, 2**63], np.uint64)},
            "label 9223372036854775808",
        ),
        ({"x": np.zeros((2, 2)), "y": np.array([0.0, 1e20])}, "label 100000000000000000000"),
        ({"x": np.zeros((2, 2)), "y": np.array([0, -1])}, "negative labels"),
        ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, "non-integer"),
        ({"x": np.zeros((2, 2)), "y": np.array([0.0, np.nan])}, "non-integer"),
        ({"x": np.zeros((2, 2)), "y": np.zeros((2, 2), np.int64)}, "1-D array"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1])}, "has 3 samples"),
        ({"x": np.zeros((2, 2)), "y": np.array(["a", "b"])}, "dtype <U1"),
        ({"x": np.array([[1.0, np.nan], [0.0, 1.0], [np.inf, 0]])}, "in 2 sample"),
        ({"x": np.array([[1e300, 0.0]])}, "NaN or infinite"),  # infinite as float32
        ({"x": np.asfortranarray(np.array([[1.0, np.nan], [2, 3], [4, 5]]))}, "in 1 value"),
        ({"x": np.array([{"a": 1}, {"b": 2}], dtype=object)}, "object dtype"),
        ({"x": np.array([1 + 2j, 3j]).reshape(2, 1)}, "not numeric"),
        ({"inputs": np.zeros((2, 2))}, r'no array named "x" \(found: inputs\)'),
    ],
)
def test_refusals(tmp_path: Path, arrays: dict[str, np.ndarray], fragment: str) -> None:
    with pytest.raises(DistillError, match=fragment):
        inspect_npz(save(tmp_path, **arrays))


def test_damaged_archives(tmp_path: Path) -> None:
    good = save(tmp_path, x=np.arange(4000.0).reshape(1000, 4))
    truncated = tmp_path / "short.npz"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(truncated, "w") as target:
        target.writestr("x.npy", source.read("x.npy")[:-100])
    with pytest.raises(DistillError, match="truncated"):
        inspect_npz(truncated)
    unsafe = tmp_path / "unsafe.npz"
    with zipfile.ZipFile(unsafe, "w") as archive:
        archive.writestr("../x.npy", b"")
    with pytest.raises(DistillError, match="unsafe path"):
        inspect_npz(unsafe)
    single = tmp_path / "one.npy"
    np.save(single, np.zeros((2, 2)))
    with pytest.raises(DistillError, match="single .npy array"):
        inspect_npz(single)
    for content in (b"", b"not a zip", b"PK\x03\x04broken"):
        (tmp_path / "bad.npz").write_bytes(content)
        with pytest.raises(DistillError, match="not a readable .npz archive"):
            inspect_npz(tmp_path / "bad.npz")


def test_the_inspector_child_imports_numpy_only() -> None:
    """The child starts for every dataset: it must not pay for torch or the service."""
    import subprocess
    import sys

    code = (
        "import sys, distill.inspector; "
        "heavy = ('torch', 'onnxruntime', 'onnx', 'sqlalchemy', 'celery', 'core', 'service'); "
        "bad = sorted(m for m in heavy if m in sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
