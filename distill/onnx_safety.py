"""Reading an uploaded ONNX file without letting it reach any other file.

An ONNX tensor may keep its bytes in an "external data" file named by a path
relative to the model. In a shared artifact store that path can name another
upload, so Stillhouse refuses every such tensor. The decision is made from the
protobuf alone, before ONNX Runtime or onnx.checker could open the named path:
the answer is the same whether that file exists or not, so it cannot be used
to probe the store either.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import onnx
from onnx import AttributeProto, GraphProto, ModelProto, SparseTensorProto, TensorProto

from distill.errors import DistillError

EXTERNAL_DATA_REFUSED = (
    "This ONNX file keeps weights in external data files, which Stillhouse does not accept; "
    "save it as a single file (onnx.save(model, path, save_as_external_data=False))."
)


def _sparse(sparse: SparseTensorProto) -> Iterator[TensorProto]:
    yield sparse.values
    yield sparse.indices


def _attribute_tensors(attribute: AttributeProto) -> Iterator[TensorProto]:
    if attribute.HasField("t"):
        yield attribute.t
    yield from attribute.tensors
    if attribute.HasField("sparse_tensor"):
        yield from _sparse(attribute.sparse_tensor)
    for sparse in attribute.sparse_tensors:
        yield from _sparse(sparse)
    if attribute.HasField("g"):
        yield from _graph_tensors(attribute.g)
    for graph in attribute.graphs:
        yield from _graph_tensors(graph)


def _graph_tensors(graph: GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from _sparse(sparse)
    for node in graph.node:
        for attribute in node.attribute:
            yield from _attribute_tensors(attribute)


def model_tensors(model: ModelProto) -> Iterator[TensorProto]:
    """Every tensor a model carries: initializers, constants and attribute
    tensors, in the main graph, in subgraphs (If, Loop, Scan), in local
    functions (their nodes and attribute defaults) and in training graphs."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            for attribute in node.attribute:
                yield from _attribute_tensors(attribute)
        for attribute in function.attribute_proto:
            yield from _attribute_tensors(attribute)
    for info in model.training_info:
        yield from _graph_tensors(info.initialization)
        yield from _graph_tensors(info.algorithm)


def refuse_external_data(model: ModelProto) -> None:
    """Raise DistillError when any tensor of the model names external data."""
    for tensor in model_tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0:
            raise DistillError(EXTERNAL_DATA_REFUSED)


def read_onnx(path: str | os.PathLike[str]) -> tuple[bytes, ModelProto]:
    """The file's bytes and its parsed protobuf, refused if it names external
    data. Parsing from bytes never follows an external path; callers build
    their ONNX Runtime session from the same bytes, so no path is handed on."""
    try:
        with open(path, "rb") as source:
            data = source.read()
    except FileNotFoundError as exc:
        raise DistillError("The model file is missing from the artifact store.") from exc
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise DistillError(
            "The file is not a valid ONNX model (it does not parse as an ONNX protobuf); "
            "export it again with torch.onnx.export or onnx.save."
        ) from exc
    refuse_external_data(model)
    return data, model
