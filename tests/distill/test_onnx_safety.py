"""External data in an ONNX file is refused from the protobuf alone, wherever
the tensor hides, and before any named file could be opened."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from distill.errors import DistillError
from distill.onnx_safety import EXTERNAL_DATA_REFUSED, read_onnx
from distill.teachers import OnnxTeacher, inspect_onnx
from tests.onnx_crafted import external_data_onnx, external_in_subgraph_onnx, plain_onnx


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_same_refusal_whether_the_named_file_exists_or_not(tmp_path: Path) -> None:
    secret = _write(tmp_path, "secret.bin", np.arange(8, dtype=np.float32).tobytes())
    errors = []
    for location in (secret.name, "absent.bin", str(secret), "../../etc/passwd"):
        path = _write(tmp_path, "crafted.onnx", external_data_onnx(location))
        with pytest.raises(DistillError) as refused:
            inspect_onnx(path)
        errors.append(str(refused.value))
        with pytest.raises(DistillError, match="external data"):
            OnnxTeacher(path)  # the job-time load applies the same rule
    assert errors == [EXTERNAL_DATA_REFUSED] * 4


def test_external_data_in_a_subgraph_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "if.onnx", external_in_subgraph_onnx("w.bin"))
    with pytest.raises(DistillError, match="external data"):
        read_onnx(path)


def test_external_data_in_a_local_function_is_refused(tmp_path: Path) -> None:
    weight = TensorProto(name="c", data_type=TensorProto.FLOAT, dims=[4, 2])
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="w.bin")
    function = helper.make_function(
        "local",
        "F",
        ["x"],
        ["y"],
        [
            helper.make_node("Constant", [], ["w"], value=weight),
            helper.make_node("MatMul", ["x", "w"], ["y"]),
        ],
        [helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph(
        [helper.make_node("F", ["x"], ["y"], domain="local")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    model = helper.make_model(
        graph,
        functions=[function],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
    )
    path = tmp_path / "function.onnx"
    onnx.save(model, path)
    with pytest.raises(DistillError, match="external data"):
        read_onnx(path)


def test_a_single_file_onnx_still_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, "plain.onnx", plain_onnx())
    info = inspect_onnx(path)
    assert info.num_params == 8 and info.output_shape == [1, 2]
    logits = OnnxTeacher(path).predict_logits(np.ones((3, 4), np.float32))
    np.testing.assert_allclose(logits, np.full((3, 2), 4.0), atol=1e-6)
