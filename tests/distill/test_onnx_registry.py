"""The ONNX exporter's op registry is built once per process (distill.onnx_registry): each
export gets its own copy, with the same functions as a registry built from scratch."""

from __future__ import annotations

import pytest
import torch

from distill.onnx_registry import install

_registration = pytest.importorskip("torch.onnx._internal.exporter._registration")


def test_each_export_gets_a_copy_with_the_functions_of_a_fresh_build() -> None:
    assert install() is True and install() is True  # idempotent
    registry_class = _registration.ONNXRegistry
    first, second = registry_class.from_torchlib(), registry_class.from_torchlib()
    assert first is not second and first.functions is not second.functions
    fresh = registry_class.from_torchlib.__wrapped__()  # what torch builds on its own
    assert set(first.functions) == set(fresh.functions)
    for target, metas in fresh.functions.items():
        assert [m.onnx_function for m in first.functions[target]] == [
            m.onnx_function for m in metas
        ], target
    assert first.opset_version == fresh.opset_version

    # An op registered on one copy (torch.onnx.export's custom_translation_table) stays there.
    target = torch.ops.aten.relu.default
    before = len(first.functions[target.name()])
    first.register_op(target, lambda x: x)
    assert len(first.functions[target.name()]) == before + 1
    assert len(second.functions[target.name()]) == before
    assert len(registry_class.from_torchlib().functions[target.name()]) == before
