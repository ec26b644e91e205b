"""The gateway counts a zoo student's parameters without torch; the count must
be the one the engine's model really has, for every family of the zoo."""

from __future__ import annotations

from typing import Any

import pytest

from core.spec import STUDENT_ARCHITECTURES, STUDENT_PARAM_COUNTS, student_param_count
from distill.students import build_student, count_params

CONFIGS: list[tuple[str, dict[str, Any], tuple[int, ...], int]] = [
    ("mlp", {}, (64,), 10),
    ("mlp", {"hidden": []}, (64,), 10),
    ("mlp", {"hidden": [32]}, (8, 8), 10),
    ("mlp", {"hidden": [128, 64, 7], "dropout": 0.3}, (3, 4, 5), 2),
    ("mlp", {"hidden": [1]}, (1,), 1),
    ("cnn1d", {}, (64,), 10),
    ("cnn1d", {"channels": 8}, (8, 8), 10),  # (C, L): 8 input channels
    ("cnn1d", {"channels": 4, "layers": 1, "kernel_size": 4}, (100,), 3),
    ("cnn1d", {"channels": 32, "layers": 5, "kernel_size": 7}, (3, 50), 12),
    ("cnn1d", {"channels": 1, "layers": 3, "kernel_size": 1}, (2, 9), 1),
]


def test_every_zoo_family_has_a_count() -> None:
    assert set(STUDENT_PARAM_COUNTS) == set(STUDENT_ARCHITECTURES)
    assert {arch for arch, *_ in CONFIGS} == set(STUDENT_ARCHITECTURES)


@pytest.mark.parametrize(("architecture", "params", "shape", "classes"), CONFIGS)
def test_count_equals_the_built_model(
    architecture: str, params: dict[str, Any], shape: tuple[int, ...], classes: int
) -> None:
    model = build_student(architecture, params, shape, classes)
    assert student_param_count(architecture, params, list(shape), classes) == count_params(model)


def test_huge_widths_are_counted_without_building() -> None:
    assert student_param_count("mlp", {"hidden": [16384, 16384]}, [64], 10) == 269_680_650
    # JSON's 1e6 arrives as a float; it is still counted, so the refusal names the size.
    assert student_param_count("mlp", {"hidden": [1e6, 1e6]}, [64], 10) == 1_000_076_000_010


@pytest.mark.parametrize(
    ("architecture", "params", "shape"),
    [
        ("mlp", {"hidden": "wide"}, [64]),
        ("mlp", {"hidden": [0]}, [64]),
        ("mlp", {"hidden": [2.5]}, [64]),
        ("mlp", {"width": 3}, [64]),
        ("cnn1d", {"channels": True}, [64]),
        ("cnn1d", {}, [2, 3, 4]),
        ("vit", {}, [64]),
    ],
)
def test_params_the_zoo_refuses_are_left_to_it(
    architecture: str, params: dict[str, Any], shape: list[int]
) -> None:
    assert student_param_count(architecture, params, shape, 10) is None
