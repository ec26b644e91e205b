"""The student zoo: shapes for each architecture and registry errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.errors import DistillError
from distill.students import (
    STUDENTS,
    build_student,
    check_token_ids,
    count_params,
    example_input,
    input_dtype,
)


@pytest.mark.parametrize(
    ("arch", "params", "shape"),
    [
        ("mlp", {}, (64,)),
        ("mlp", {"hidden": [16, 8], "dropout": 0.1}, (3, 4, 5)),
        ("cnn1d", {}, (32,)),
        ("cnn1d", {"channels": 4, "layers": 3, "kernel_size": 5}, (2, 20)),
        ("cnn1d", {"layers": 1}, (1,)),
        ("cnn2d", {}, (3, 8, 8)),
        ("cnn2d", {"channels": [4, 8, 8], "blocks": 2}, (5, 6)),
        ("gru", {}, (12, 3)),
        ("gru", {"hidden": 4, "layers": 2, "bidirectional": True}, (9,)),
        ("gru", {"vocab_size": 20, "embed_dim": 4}, (11,)),
        ("transformer", {}, (10, 2)),
        ("transformer", {"d_model": 8, "heads": 2, "vocab_size": 20, "embed_dim": 4}, (11,)),
    ],
)
def test_output_shapes(arch: str, params: dict, shape: tuple[int, ...]) -> None:
    model = build_student(arch, params, shape, 7)
    x = example_input(model, 5, shape, seed=0)  # int64 ids for a token student
    assert x.dtype == (torch.int64 if "vocab_size" in params else torch.float32)
    assert model(x).shape == (5, 7)
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
        ("resnet", {}, (4,), "valid architectures are: cnn1d, cnn2d, gru, mlp, transformer"),
        ("mlp", {"width": 3}, (4,), "Unknown parameter 'width'.*valid parameters: hidden, dropout"),
        ("mlp", {"hidden": 32}, (4,), "'hidden'"),
        ("mlp", {"hidden": [0]}, (4,), r"'hidden\[0\]'.*greater than or equal to 1"),
        ("mlp", {"dropout": 1.5}, (4,), "'dropout'"),
        ("cnn1d", {"channels": "8"}, (4,), "'channels'"),
        ("cnn1d", {"kernel_size": True}, (4,), "'kernel_size'"),
        ("cnn1d", {}, (2, 3, 4), "shape \\(L,\\) or \\(C, L\\)"),
        ("cnn2d", {}, (64,), "image samples of shape \\(H, W\\) or \\(C, H, W\\)"),
        ("gru", {"vocab_size": 9}, (4, 2), "reads \\(T,\\) token ids"),
        ("transformer", {"d_model": 10, "heads": 4}, (4, 2), "'heads'.*divisible by heads"),
        ("transformer", {}, (3, 4, 4), "sequences of shape \\(T, F\\)"),
        ("gru", {"embed_dim": 8}, (4, 2), "'embed_dim'.*token ids only"),
        ("mlp", {}, (), "input shape"),
    ],
)
def test_errors(arch: str, params: dict, shape: tuple[int, ...], fragment: str) -> None:
    with pytest.raises(DistillError, match=fragment):
        build_student(arch, params, shape, 3)
    assert set(STUDENTS) == {"mlp", "cnn1d", "cnn2d", "gru", "transformer"}


def test_mlp_keeps_its_state_dict_keys() -> None:
    """Saved mlp students load: the `hidden` feature layer adds no weights."""
    model = build_student("mlp", {"hidden": [8, 4], "dropout": 0.1}, (6,), 3)
    assert list(model.state_dict()) == [
        "net.1.weight",
        "net.1.bias",
        "net.4.weight",
        "net.4.bias",
        "net.7.weight",
        "net.7.bias",
    ]
    seen: list[torch.Size] = []
    model.get_submodule("hidden").register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model(torch.randn(2, 6))
    assert seen == [torch.Size([2, 4])]


def test_token_ids_are_checked_against_the_vocabulary() -> None:
    model = build_student("gru", {"vocab_size": 10}, (5,), 2)
    assert input_dtype(model) == torch.int64
    check_token_ids(model, np.arange(20).reshape(4, 5) % 10, "training")
    with pytest.raises(DistillError, match=r"token ids in \[0, 19\].*vocab_size is 10"):
        check_token_ids(model, np.arange(20).reshape(4, 5), "training")
    with pytest.raises(DistillError, match="are float32; upload integer ids"):
        check_token_ids(model, np.zeros((2, 5), np.float32), "training")
