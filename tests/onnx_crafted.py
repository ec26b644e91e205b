"""Hand-built ONNX files for the security tests: a tiny MatMul whose weight
names an external data file, the way a crafted upload would."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _external(name: str, shape: list[int], location: str) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
    tensor.data_location = TensorProto.EXTERNAL
    length = 4 * int(np.prod(shape))
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def matmul_model(weight: TensorProto, doc: str = "") -> onnx.ModelProto:
    """y = x @ W with x (1, 4) and W (4, 2)."""
    node = helper.make_node("MatMul", ["x", weight.name], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.doc_string = doc
    return model


def external_data_onnx(location: str) -> bytes:
    return matmul_model(_external("W", [4, 2], location)).SerializeToString()


def external_data_onnx_beside(target_sha: str) -> bytes:
    """An ONNX whose weight file is `target_sha`, and whose own sha256 starts
    with the same two characters: stored in the same blob folder, the name is
    a plain relative path to the target blob (no '..' needed)."""
    for nonce in range(100_000):
        data = matmul_model(_external("W", [4, 2], target_sha), doc=str(nonce)).SerializeToString()
        if hashlib.sha256(data).hexdigest()[:2] == target_sha[:2]:
            return data
    raise AssertionError("no nonce put the model beside the target blob")


def plain_onnx() -> bytes:
    weight = numpy_helper.from_array(np.ones((4, 2), np.float32), "W")
    return matmul_model(weight).SerializeToString()


def external_in_subgraph_onnx(location: str) -> bytes:
    """External data hidden in an If branch's Constant node, not in the initializers."""
    const = helper.make_node("Constant", [], ["w"], value=_external("c", [4, 2], location))
    branch = helper.make_graph(
        [const, helper.make_node("MatMul", ["x", "w"], ["y_then"])],
        "then",
        [],
        [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, [1, 2])],
    )
    other = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y_else"])],
        "else",
        [],
        [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, [1, 2])],
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [cond, numpy_helper.from_array(np.ones((4, 2), np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()
