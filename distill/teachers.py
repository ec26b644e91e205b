"""Teachers as ONNX models run by ONNX Runtime: inspection and batched logit prediction."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch

from distill.errors import DistillError
from distill.onnx_safety import read_onnx
from distill.teacher_tensors import list_tensors, with_outputs

_FLOAT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}
# The input types a model may have: floats, or int64 token ids (a text model's input).
_INPUT_TYPES = {**_FLOAT_TYPES, "tensor(int64)": np.int64}


@dataclass(frozen=True)
class ModelInfo:
    format: str  # "onnx" | "safetensors"
    input_shape: list[int | None]  # batch dim first; None for dynamic dims
    output_shape: list[int | None]
    num_params: int  # ONNX: sum of initializer element counts
    input_dtype: str = "float32"  # what the model reads: a float type, or "int64" token ids
    # ONNX: the named intermediate float tensors [{"name", "shape"}] a feature loss may read.
    tensors: list[dict[str, object]] | None = None


def _dims(shape: list[int | str | None]) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def ort_providers(device: str) -> list[str | tuple[str, dict[str, int]]]:
    """CUDA first when `device` asks for it and this onnxruntime build has it; CPU always,
    both as the fallback for ops CUDA lacks and for a machine without a GPU."""
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(spin: bool = True, threads: int | None = None) -> ort.SessionOptions:
    """`threads` pins the intra-op pool (None: onnxruntime's default, one per core); ops run
    one after another (inter-op 1), so the pool is the only parallelism and a thread count
    given here is the one that runs. With `spin=False` idle intra-op threads sleep instead
    of busy-waiting for the next run: right for a server whose run is followed by I/O,
    where the spinning threads would take the CPU from the process that replies."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def make_session(
    model_bytes: bytes, device: str, threads: int | None = None, spin: bool = True
) -> ort.InferenceSession:
    """A session built from bytes already checked by read_onnx: given no path,
    ONNX Runtime has no folder to resolve an external-data name against. See
    session_options for `threads` and `spin`."""
    options = session_options(spin, threads)
    try:
        return ort.InferenceSession(model_bytes, options, providers=ort_providers(device))
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise DistillError(
            f"ONNX Runtime cannot load the model ({str(exc).strip()[:300]}); export it with a "
            "standard opset (e.g. torch.onnx.export) and try again."
        ) from exc


def check_io(session: ort.InferenceSession) -> tuple[str, list[int | None], type]:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise DistillError(
            f"The teacher model has {len(inputs)} inputs ({names}); Stillhouse needs exactly one "
            "float or int64 input. Re-export the model with a single input tensor."
        )
    if inputs[0].type not in _INPUT_TYPES:
        raise DistillError(
            f"The teacher model's input has type {inputs[0].type}; Stillhouse needs a float "
            "input (float32, float16 or double) or int64 token ids."
        )
    if not outputs:
        raise DistillError("The teacher model has no outputs; its first output must be logits.")
    shape = _dims(list(inputs[0].shape))
    if not shape:
        raise DistillError(
            "The teacher model's input is a scalar; it needs a batch dimension first."
        )
    return inputs[0].name, shape, _INPUT_TYPES[inputs[0].type]


def inspect_onnx(path: str | os.PathLike) -> ModelInfo:
    """Check an ONNX teacher and run one batch of zeros to learn its concrete output shape."""
    data, model = read_onnx(path)  # refuses external data before anything opens a path
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises ValidationError and friends
        raise DistillError(
            f"The file is not a valid ONNX model: {str(exc).strip()[:300]}"
            + ("" if str(exc).strip().endswith(".") else ".")
        ) from exc
    num_params = sum(math.prod(init.dims) for init in model.graph.initializer)
    teacher = OnnxTeacher(path, checked_bytes=data)
    batch = teacher.input_shape[0] or 2
    feature = teacher.input_shape[1:]
    if any(d is None for d in feature):
        raise DistillError(
            f"The teacher model's input shape {teacher.input_shape} has dynamic dimensions "
            "besides the batch; export it with fixed sample dimensions."
        )
    # Zeros in the model's input type (id 0 is a valid token for an int64 input).
    zeros: np.ndarray = np.zeros(
        (batch, *(int(d) for d in feature if d is not None)), dtype=teacher.dtype
    )
    out = teacher.run_raw(zeros)
    return ModelInfo(
        format="onnx",
        input_shape=teacher.input_shape,
        output_shape=[teacher.input_shape[0], *out.shape[1:]],
        num_params=int(num_params),
        input_dtype=np.dtype(teacher.dtype).name,
        tensors=list_tensors(model),
    )


def cast_inputs(x: np.ndarray, dtype: type, owner: str) -> np.ndarray:
    """x in the model's input type. Floats and integers become a float model's type; a
    token model (int64 input) takes integer ids only: floats are refused, never rounded."""
    if np.dtype(dtype).kind in "iu" and x.dtype.kind not in "iub":
        raise DistillError(
            f"The {owner} reads int64 token ids but the data holds {x.dtype} samples; upload "
            "the token ids as integers."
        )
    return x.astype(dtype, copy=False)


def fit_samples(x: np.ndarray, feature: list[int | None], owner: str) -> np.ndarray:
    """Samples x (N, ...) in the model's per-sample shape `feature`: as is when they match or
    the model's sample dims are dynamic, reshaped when they hold as many values (flattened
    images), else a DistillError naming the `owner` ("teacher", "model")."""
    if any(d is None for d in feature):
        return x  # dynamic sample dims: pass the data through as is
    if tuple(x.shape[1:]) == tuple(feature):
        return x
    if math.prod(x.shape[1:]) != math.prod(feature):  # type: ignore[arg-type]
        raise DistillError(
            f"The data samples have shape {list(x.shape[1:])} but the {owner} expects "
            f"{feature} per sample; upload data that matches the {owner}'s input."
        )
    return x.reshape(len(x), *feature)


def padded_batches(
    x: np.ndarray, fixed: int | None, batch_size: int
) -> Iterator[tuple[np.ndarray, int]]:
    """(batch, rows of x in it) over x (N, ...), `batch_size` rows at a time. A model with
    a fixed batch dim needs full batches: it gets batches of its own size, the last one
    padded with zeros; the caller keeps the first n rows of each output."""
    step = fixed or batch_size
    for start in range(0, len(x), step):
        batch = x[start : start + step]  # (b, ...)
        n = len(batch)
        if fixed is not None and n < fixed:
            batch = np.concatenate([batch, np.zeros((fixed - n, *batch.shape[1:]), batch.dtype)])
        yield batch, n


class OnnxTeacher:
    """An ONNX model whose first output is the logits (N, C)."""

    def __init__(
        self,
        path: str | os.PathLike,
        device: str = "cpu",
        checked_bytes: bytes | None = None,
        threads: int | None = None,
        spin: bool = True,
        tensors: tuple[str, ...] = (),
    ):
        # Every load goes through read_onnx, so a job's teacher is held to the same
        # no-external-data rule as its inspection. `checked_bytes`: what read_onnx
        # already returned for this path, so inspection reads the file once. `spin`:
        # see session_options.
        data = checked_bytes if checked_bytes is not None else read_onnx(path)[0]
        # `tensors`: intermediate tensors to return beside the logits (predict_tensors).
        self.tensors = tuple(tensors)
        if self.tensors:
            data = with_outputs(onnx.load_from_string(data), list(self.tensors))
        self.session = make_session(data, device, threads, spin)
        self.input_name, self.input_shape, self.dtype = check_io(self.session)
        self.output_name = self.session.get_outputs()[0].name

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """One session run on a batch already in the model's shape."""
        feed = {self.input_name: cast_inputs(x, self.dtype, "teacher")}
        try:
            (out,) = self.session.run([self.output_name], feed)
        except Exception as exc:
            raise DistillError(
                f"The teacher model failed on a batch of shape {list(x.shape)} "
                f"({str(exc).strip()[:300]}); check that the data matches the model's input "
                f"shape {self.input_shape}."
            ) from exc
        return np.asarray(out)

    def predict_tensors(
        self, x: np.ndarray, batch_size: int = 1024
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits (N, C) and each of `self.tensors` (N, ...) float32, from one pass over x."""
        x = fit_samples(np.asarray(x), self.input_shape[1:], "teacher")
        names = [self.output_name, *self.tensors]
        chunks: list[list[np.ndarray]] = [[] for _ in names]
        for batch, n in padded_batches(x, self.input_shape[0], batch_size):
            try:
                feed = {self.input_name: cast_inputs(batch, self.dtype, "teacher")}
                outs = self.session.run(names, feed)
            except Exception as exc:
                raise DistillError(
                    f"The teacher model failed on a batch of shape {list(batch.shape)} "
                    f"({str(exc).strip()[:300]}); check that the data matches its input."
                ) from exc
            for parts, out in zip(chunks, outs, strict=True):
                parts.append(np.asarray(out)[:n])
        logits = np.concatenate(chunks[0]).reshape(len(x), -1).astype(np.float32, copy=False)
        arrays = {
            name: np.concatenate(parts).astype(np.float32, copy=False)
            for name, parts in zip(self.tensors, chunks[1:], strict=True)
        }
        return logits, arrays

    def predict_logits(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Teacher logits (N, C) float32 for inputs x (N, ...)."""
        if len(x) == 0:
            raise DistillError("There are no samples to run the teacher on; upload a data set.")
        # Kept in its own type (int64 token ids stay integers); run_raw casts per batch.
        x = fit_samples(np.asarray(x), self.input_shape[1:], "teacher")
        chunks: list[np.ndarray] = []
        for batch, n in padded_batches(x, self.input_shape[0], batch_size):
            out = self.run_raw(batch)[:n]  # (n, C, ...)
            chunks.append(out.reshape(n, -1))
        logits = np.concatenate(chunks).astype(np.float32, copy=False)  # (N, C)
        if not np.isfinite(logits).all():
            raise DistillError(
                "The teacher produced NaN or infinite logits on this data; check the model and "
                "that the inputs are preprocessed the way the teacher expects."
            )
        return logits

    def torch_logits(self, xb: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) float32 on xb's device for a batch xb (B, ...): online KD's per-step
        call. ONNX Runtime takes numpy, so the batch goes through the host and back."""
        out = self.predict_logits(xb.detach().cpu().numpy(), batch_size=max(len(xb), 1))
        return torch.from_numpy(out).to(xb.device)
