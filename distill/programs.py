"""TorchScript and torch.export programs as teachers. Loading one runs code
from the file, so the service accepts them only when its operator opts in
(STILLHOUSE_ALLOW_TORCH_PROGRAMS); this module just loads and runs them."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from distill.errors import DistillError
from distill.teachers import ModelInfo

PROBE_BATCH = 2


def load_program(
    path: str | os.PathLike[str], fmt: str, device: str = "cpu"
) -> Callable[..., torch.Tensor]:
    try:
        if fmt == "torchscript":
            module = torch.jit.load(os.fspath(path), map_location=device)
            module.eval()
            return module
        if fmt == "torch_export":
            return torch.export.load(os.fspath(path)).module().to(device)
    except Exception as exc:  # torch raises many untyped errors for a bad archive
        raise DistillError(f"The {fmt} file cannot be loaded: {str(exc).strip()[:300]}.") from exc
    raise DistillError(f"'{fmt}' is not a torch program format (torchscript, torch_export).")


def _example_shape(program: Callable[..., torch.Tensor], fmt: str) -> list[int]:
    if fmt == "torch_export":
        graph_module = program  # an unlifted GraphModule keeps example metadata on placeholders
        for node in getattr(graph_module, "graph").nodes:  # noqa: B009
            value = node.meta.get("val")
            if node.op == "placeholder" and value is not None and hasattr(value, "shape"):
                return [int(d) if isinstance(d, int) else PROBE_BATCH for d in value.shape]
    raise DistillError(
        "A TorchScript teacher does not record its input shape; upload it as ONNX instead, "
        "or as a torch.export program."
    )


def inspect_torch_program(path: str | os.PathLike[str], fmt: str) -> ModelInfo:
    program = load_program(path, fmt)
    shape = _example_shape(program, fmt)
    with torch.no_grad():
        out = program(torch.zeros(shape))
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise DistillError("The program's first output must be a (batch, classes) logits tensor.")
    params = sum(p.numel() for p in getattr(program, "parameters", list)())
    return ModelInfo(
        format=fmt,
        input_shape=[None, *shape[1:]],
        output_shape=[None, int(out.shape[1])],
        num_params=int(params),
    )


def _floats(x: torch.Tensor) -> torch.Tensor:
    """A program's input is float32: integer data (pixels kept as int64) is cast, as it was
    before integer arrays were kept exact; float data passes as is."""
    return x if x.is_floating_point() else x.float()


class ProgramTeacher:
    def __init__(self, path: str | os.PathLike[str], fmt: str, device: str = "cpu") -> None:
        self.device = device
        self.program = load_program(path, fmt, device)

    def predict_logits(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        outputs = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                batch = _floats(torch.from_numpy(x[start : start + batch_size])).to(self.device)
                outputs.append(self.program(batch).float().cpu().numpy())
        return np.concatenate(outputs).astype(np.float32)  # (N, C)

    def torch_logits(self, xb: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) float32 on xb's device, for online KD (call it under no_grad)."""
        return self.program(_floats(xb).to(self.device)).float().to(xb.device)
