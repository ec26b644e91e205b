"""The gateway counts a zoo student's parameters without torch (catalog.students); the
count must be the one the engine's model really has, for every family of the zoo."""

from __future__ import annotations

from typing import Any

import pytest

from catalog.students import ARCHITECTURES, FAMILIES, param_count
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
    ("cnn2d", {}, (1, 8, 8), 10),
    ("cnn2d", {}, (8, 8), 10),  # (H, W): one channel
    ("cnn2d", {"channels": [8]}, (3, 5, 7), 4),  # one stage: no stride, no projection
    ("cnn2d", {"channels": [4, 4, 12], "blocks": 2}, (3, 16, 16), 2),
    ("cnn2d", {"channels": [16, 8], "blocks": 3}, (2, 1, 1), 5),
    ("gru", {}, (20, 3), 10),
    ("gru", {"hidden": 8}, (40,), 4),  # (T,) floats: one feature per step
    ("gru", {"hidden": 5, "layers": 3, "bidirectional": True}, (7, 6), 3),
    ("gru", {"vocab_size": 50}, (12,), 2),
    ("gru", {"vocab_size": 1000, "embed_dim": 8, "layers": 2, "bidirectional": True}, (9,), 6),
    ("transformer", {}, (16, 4), 10),
    ("transformer", {"d_model": 12, "heads": 3, "layers": 1, "ff": 7}, (30,), 2),
    ("transformer", {"d_model": 32, "max_len": 64, "dropout": 0.1}, (10, 5), 3),
    ("transformer", {"vocab_size": 100}, (24,), 4),
    ("transformer", {"vocab_size": 100, "embed_dim": 16, "d_model": 8, "heads": 2}, (6,), 2),
]


def test_every_zoo_family_has_configs() -> None:
    assert {arch for arch, *_ in CONFIGS} == set(ARCHITECTURES) == set(FAMILIES)


@pytest.mark.parametrize(("architecture", "params", "shape", "classes"), CONFIGS)
def test_count_equals_the_built_model(
    architecture: str, params: dict[str, Any], shape: tuple[int, ...], classes: int
) -> None:
    model = build_student(architecture, params, shape, classes)
    assert param_count(architecture, params, list(shape), classes) == count_params(model)


def test_huge_widths_are_counted_without_building() -> None:
    assert param_count("mlp", {"hidden": [16384, 16384]}, [64], 10) == 269_680_650
    assert param_count("mlp", {"hidden": [1_000_000, 1_000_000]}, [64], 10) == 1_000_076_000_010
    # JSON's 1e6 arrives as a float: not a width (the schema is strict), so not counted.
    assert param_count("mlp", {"hidden": [1e6]}, [64], 10) is None


@pytest.mark.parametrize(
    ("architecture", "params", "shape"),
    [
        ("mlp", {"hidden": "wide"}, [64]),
        ("mlp", {"hidden": [0]}, [64]),
        ("mlp", {"hidden": [2.5]}, [64]),
        ("mlp", {"width": 3}, [64]),
        ("cnn1d", {"channels": "many"}, [64]),
        ("cnn1d", {}, [2, 3, 4]),
        ("cnn2d", {}, [64]),  # flat samples are refused, not guessed into a square
        ("gru", {}, [2, 3, 4]),
        ("gru", {"vocab_size": 10}, [5, 2]),  # token ids are (T,)
        ("transformer", {"d_model": 10, "heads": 4}, [5, 2]),
        ("transformer", {}, [3, 8, 8]),
        ("transformer", {"max_len": 4}, [5, 2]),
        ("vit", {}, [64]),
    ],
)
def test_params_the_zoo_refuses_are_not_counted(
    architecture: str, params: dict[str, Any], shape: list[int]
) -> None:
    assert param_count(architecture, params, shape, 10) is None
