"""A teacher's named intermediate tensors: listed at inspection (ONNX shape inference) and
exposed as extra graph outputs when a job's feature loss reads them."""

from __future__ import annotations

from typing import Any

import onnx
from onnx import TensorProto

from distill.errors import DistillError

# A listing stops here: a big graph has thousands of intermediates, and a user picks one.
MAX_TENSORS = 256
_FLOAT = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def _shape(value: onnx.ValueInfoProto) -> list[int | None] | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in tensor.shape.dim
    ]


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort: a custom op stops it, the graph still runs
        return model


def list_tensors(model: onnx.ModelProto) -> list[dict[str, Any]]:
    """[{"name", "shape"}] of the float tensors computed inside the graph, in graph order:
    not the inputs, not initializers, not the first (logits) output; at most MAX_TENSORS.
    Shapes come from ONNX shape inference, the batch dim first; None for an unknown dim."""
    graph = _inferred(model).graph
    skip = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    if graph.output:
        skip.add(graph.output[0].name)
    infos = {v.name: v for v in [*graph.value_info, *graph.output]}
    found: list[dict[str, Any]] = []
    for node in graph.node:
        for name in node.output:
            info = infos.get(name)
            if not name or name in skip or info is None:
                continue
            if info.type.tensor_type.elem_type not in _FLOAT:
                continue
            shape = _shape(info)
            if not shape:  # scalars and unknown ranks: nothing a feature loss can read
                continue
            found.append({"name": name, "shape": shape})
            skip.add(name)
            if len(found) == MAX_TENSORS:
                return found
    return found


def with_outputs(model: onnx.ModelProto, names: list[str]) -> bytes:
    """The model's bytes with `names` added as graph outputs after its own, so one session
    run returns the logits and the requested tensors."""
    graph = _inferred(model).graph
    have = {o.name for o in graph.output}
    infos = {v.name: v for v in graph.value_info}
    produced = {name for node in graph.node for name in node.output}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for name in names:
        if name in have:
            continue
        if name not in produced:
            raise DistillError(
                f"The teacher model computes no tensor named {name!r}; pick one of the "
                "tensors its GET /v1/models/{id} lists."
            )
        info = infos.get(name) or onnx.helper.make_empty_tensor_value_info(name)
        out.graph.output.append(info)
    return out.SerializeToString()
