"""The student zoo: shapes for each architecture and registry errors."""

from __future__ import annotations

import pytest
import torch

from distill.errors import DistillError
from distill.students import STUDENTS, build_student, count_params


@pytest.mark.parametrize(
    ("arch", "params", "shape"),
    [
        ("mlp", {}, (64,)),
        ("mlp", {"hidden": [16, 8], "dropout": 0.1}, (3, 4, 5)),
        ("cnn1d", {}, (32,)),
        ("cnn1d", {"channels": 4, "layers": 3, "kernel_size": 5}, (2, 20)),
        ("cnn1d", {"layers": 1}, (1,)),
    ],
)
def test_output_shapes(arch: str, params: dict, shape: tuple[int, ...]) -> None:
    model = build_student(arch, params, shape, 7)
    assert model(torch.randn(5, *shape)).shape == (5, 7)
    assert count_params(model) > 0


def test_mlp_param_count() -> None:
    model = build_student("mlp", {"hidden": [32]}, (8, 8), 10)
    assert count_params(model) == 64 * 32 + 32 + 32 * 10 + 10


def test_cnn1d_deterministic_in_eval() -> None:
    model = build_student("cnn1d", {}, (16,), 3).eval()
    x = torch.randn(4, 16)
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    ("arch", "params", "shape", "fragment"),
    [
        ("resnet", {}, (4,), "valid architectures are: cnn1d, mlp"),
        ("mlp", {"width": 3}, (4,), "Unknown parameter 'width'"),
        ("mlp", {"hidden": 32}, (4,), "'hidden'"),
        ("mlp", {"hidden": [0]}, (4,), "'hidden'"),
        ("mlp", {"dropout": 1.5}, (4,), "'dropout'"),
        ("cnn1d", {"channels": "8"}, (4,), "'channels'"),
        ("cnn1d", {"kernel_size": True}, (4,), "'kernel_size'"),
        ("cnn1d", {}, (2, 3, 4), "shape \\(L,\\) or \\(C, L\\)"),
        ("mlp", {}, (), "input shape"),
    ],
)
def test_errors(arch: str, params: dict, shape: tuple[int, ...], fragment: str) -> None:
    with pytest.raises(DistillError, match=fragment):
        build_student(arch, params, shape, 3)
    assert set(STUDENTS) == {"mlp", "cnn1d"}
