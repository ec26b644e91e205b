"""Student features by module path, the torchdistill way: forward hooks on
`model.get_submodule(path)` keep each hooked module's output for the current step.

train() opens a FeatureTap for the layers its loss reads and closes it when training ends,
normal or not, so export, parity and evaluation see a model without hooks. A hook costs one
Python call per hooked module per forward pass (~1 us), and only jobs with a feature loss
have any.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from distill.batches import Rows
from distill.errors import DistillError
from distill.losses import WeightedLoss
from distill.students import input_dtype

# Module paths listed in the sentence for an unknown student_layer.
MAX_LISTED = 24


def module_paths(model: nn.Module) -> list[str]:
    """The model's submodule paths (what student_layer may name), in definition order."""
    return [name for name, _ in model.named_modules() if name]


def find_module(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        paths = module_paths(model)
        listed = ", ".join(paths[:MAX_LISTED]) + (" ..." if len(paths) > MAX_LISTED else "")
        raise DistillError(
            f"The student has no module {path!r} for a feature loss's student_layer; valid "
            f"module paths are: {listed}."
        ) from None


class FeatureTap:
    """Forward hooks that keep the outputs of named student modules: `outputs[path]` is the
    (B, ...) output of the module's latest forward pass (the first element when a module
    returns a tuple, as nn.GRU does). Use it as a context manager; exit removes the hooks."""

    def __init__(self, model: nn.Module, paths: Sequence[str]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        # The teacher tensors the loss reads, on the training device: {name: (N, ...)}.
        self.teacher: dict[str, torch.Tensor] = {}
        self._handles = [
            find_module(model, path).register_forward_hook(self._keeper(path)) for path in paths
        ]

    def _keeper(self, path: str) -> Callable[[nn.Module, Any, Any], None]:
        outputs = self.outputs

        def keep(module: nn.Module, args: Any, output: Any) -> None:
            outputs[path] = output[0] if isinstance(output, tuple | list) else output

        return keep

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.outputs.clear()

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()


def _check_teacher_features(
    loss: WeightedLoss, features: Mapping[str, np.ndarray], n: int
) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of the teacher tensors the loss reads, each checked against n rows."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name in loss.teacher_tensors:
        array = features.get(name)
        if array is None:
            raise DistillError(
                f"The loss reads the teacher tensor {name!r} but it was not computed for this "
                "data; resubmit the job so the teacher stage caches it."
            )
        if array.ndim < 2 or len(array) != n:
            raise DistillError(
                f"The teacher tensor {name!r} has shape {list(array.shape)} but there are {n} "
                "samples; it needs one row per sample."
            )
        if not np.isfinite(array).all():
            raise DistillError(
                f"The teacher tensor {name!r} contains NaN or infinite values; check the "
                "teacher model on this data."
            )
        shapes[name] = tuple(int(d) for d in array.shape[1:])
    return shapes


def prepare_features(
    student: nn.Module,
    x: np.ndarray | Rows,
    loss: WeightedLoss,
    teacher_features: Mapping[str, np.ndarray] | None,
    classes: int,
    device: torch.device,
    online: bool = False,
) -> FeatureTap:
    """Check the teacher tensors, learn the student layers' shapes with one 2-sample forward
    pass in eval mode, bind the loss's terms (building their projections on `device`) and
    return the tap that keeps the student's features during training (no hooks when the
    loss reads none), holding the teacher tensors moved to `device` once. Call it before
    the optimizer is made: it adds parameters. An online teacher has no cached tensors."""
    if online and loss.teacher_tensors:
        raise DistillError(
            "A loss term reads teacher tensors, which only cached teacher outputs provide; "
            "use teacher_outputs 'cached' or drop the feature loss."
        )
    teacher_shapes = _check_teacher_features(loss, teacher_features or {}, len(x))
    tap = FeatureTap(student, loss.student_layers)
    student_shapes: dict[str, tuple[int, ...]] = {}
    if loss.student_layers:
        was_training = student.training
        student.eval()
        try:
            with torch.no_grad():
                student(
                    torch.from_numpy(np.ascontiguousarray(x[:2])).to(device, input_dtype(student))
                )
        finally:
            student.train(was_training)
        for path in loss.student_layers:
            out = tap.outputs.get(path)
            if not isinstance(out, torch.Tensor) or out.ndim < 2:
                tap.remove()
                raise DistillError(
                    f"The student module {path!r} does not output a (B, ...) tensor; pick "
                    "another student_layer."
                )
            student_shapes[path] = tuple(int(d) for d in out.shape[1:])
        tap.outputs.clear()
    try:
        loss.bind(student_shapes, teacher_shapes, classes)
    except DistillError:
        tap.remove()
        raise
    loss.to(device)
    tap.teacher = {
        name: torch.from_numpy(np.ascontiguousarray(teacher_features[name])).to(
            device, torch.float32
        )
        for name in loss.teacher_tensors
        if teacher_features is not None
    }
    return tap


def batch_features(
    features: Mapping[str, torch.Tensor], idx: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The rows `idx` (B,) of each device-resident teacher tensor (N, ...) -> (B, ...)."""
    return {name: array[idx] for name, array in features.items()}
