"""The README's example: distillation with few labels. A CNN teacher trained on every label
of scikit-learn's digits (bundled, no download), and a job whose student sees 10 % of the
labels plus the other 90 % of the images unlabeled, which the teacher labels.

    .venv/bin/python examples/digits_kd.py [FOLDER]    # default ./example (git-ignored)

It writes into FOLDER:
  teacher.onnx    the teacher (1x8x8 images -> 10 logits), what a user uploads
  train.npz       x (143, 1, 8, 8), y: the few labeled images
  transfer.npz    x (1294, 1, 8, 8): the unlabeled transfer set
  val.npz         x (360, 1, 8, 8), y: validation images, never trained on
  job.yaml        the job: a cnn2d student, kd + ce, a no-KD baseline; the ids are the
                  placeholders TEACHER_ID, TRAIN_ID, TRANSFER_ID and VAL_ID, which
                  `stillhouse jobs create -f job.yaml --set teacher_model_id=ID ...` fills
and prints the teacher's validation accuracy and parameter count. bench/kd_gain.py
(task digits-cnn2d) and bench/example_gain.py build their data and teachers here too.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VAL_SIZE = 360  # of scikit-learn's 1,797 digits
LABELED_FRACTION = 0.1  # of the training images; the rest lose their labels
STUDENT = {"architecture": "cnn2d", "params": {"channels": [8, 16]}}
PLACEHOLDERS = {
    "teacher_model_id": "TEACHER_ID",
    "train_dataset_id": "TRAIN_ID",
    "transfer_dataset_id": "TRANSFER_ID",
    "val_dataset_id": "VAL_ID",
}

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TeacherConfig:
    """The example's teacher: about half a minute of training on two cores, 99 % on the
    validation set, and still 30x the student's parameters. (bench/kd_gain.py's digits
    teacher is larger: conv 64-128, fc 256, 30 epochs, 601,610 parameters.)"""

    channels: tuple[int, int] = (32, 64)
    hidden: int = 128
    epochs: int = 15
    lr: float = 2e-3


@dataclass(frozen=True)
class ExampleFiles:
    teacher_onnx: Path
    train_npz: Path
    transfer_npz: Path
    val_npz: Path
    job_yaml: Path
    teacher_val_accuracy: float
    teacher_params: int
    teacher_seconds: float


def digit_images(seed: int = 0) -> tuple[Arrays, Arrays]:
    """(train x, y), (val x, y): the digits as (N, 1, 8, 8) float32 in [0, 1], a seeded
    VAL_SIZE of them held out for validation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)  # pixel values 0..16
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:VAL_SIZE], order[VAL_SIZE:]
    return (x[train], y[train]), (x[val], y[val])


def split_labels(
    x: np.ndarray, y: np.ndarray, fraction: float = LABELED_FRACTION, seed: int = 0
) -> tuple[Arrays, np.ndarray]:
    """(labeled x, y), unlabeled x: a seeded `fraction` of the rows keeps its label."""
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(len(x) * fraction)
    return (x[order[:cut]], y[order[:cut]]), x[order[cut:]]


def cnn_teacher(channels: tuple[int, int] = (64, 128), hidden: int = 256) -> Any:
    """Two 3x3 convolutions, a 2x2 max-pool and two linear layers: (B, 1, 8, 8) -> (B, 10)."""
    from torch import nn

    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 16, hidden),  # (B, c2 * 4 * 4)
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def fit(net: Any, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int = 0) -> Any:
    """Plain supervised training (Adam, batch 64, cross-entropy); returns `net` in eval mode."""
    import torch

    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    net.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(xt)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[batch]), yt[batch]).backward()
            optimizer.step()
    return net.eval()


def accuracy(net: Any, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        return float((net(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def export_onnx(net: Any, sample_shape: tuple[int, ...], path: Path) -> None:
    """A classifier as one self-contained ONNX file (input "input" of shape (batch,
    *sample_shape), output "logits", a dynamic batch dim): what a user uploads as a teacher."""
    import logging

    import torch

    # The exporter logs a warning per torchvision operator it cannot register; this
    # project has no torchvision and exports none of them.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecations
        torch.onnx.export(
            net,
            (torch.zeros(2, *sample_shape),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            external_data=False,  # one self-contained file to upload
            verbose=False,
        )


def job_spec(seed: int = 0) -> dict[str, Any]:
    """The job as `POST /v1/jobs` takes it, with PLACEHOLDERS for the four ids. The setting
    and its figures are measured in bench/example_gain.py."""
    return {
        "name": "cnn2d-from-digits-teacher",
        "teacher_model_id": PLACEHOLDERS["teacher_model_id"],
        "student": STUDENT,
        "train_dataset_id": PLACEHOLDERS["train_dataset_id"],
        "transfer_dataset_id": PLACEHOLDERS["transfer_dataset_id"],
        "val_dataset_id": PLACEHOLDERS["val_dataset_id"],
        # kd reads the teacher on all 1,437 images, ce the 143 labels alone.
        "losses": [
            {"name": "kd", "weight": 0.9, "temperature": 4.0},
            {"name": "ce", "weight": 0.1},
        ],
        "training": {
            "epochs": 60,
            "batch_size": 64,
            "lr": 0.003,
            "optimizer": "adam",
            "seed": seed,
        },
        "baseline": True,  # the same cnn2d on the 143 labels alone: what the teacher bought
    }


def flow(items: list[Any]) -> bool:
    """A list of scalars, written inline."""
    return all(not isinstance(item, dict | list) for item in items)


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for the JSON-like values of a job spec (strings quoted as JSON, which
    YAML reads the same), so the example needs no YAML library to write one."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, dict) or (isinstance(item, list) and not flow(item)):
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {to_yaml(item)}")
        return "\n".join(lines)
    if isinstance(value, list):
        if flow(value):
            return json.dumps(value)  # a flow list, e.g. [8, 16]
        lines = []
        for item in value:
            body = to_yaml(item, indent + 2).lstrip()
            lines.append(f"{pad}- {body}")
        return "\n".join(lines)
    return json.dumps(value)  # null, true, numbers, quoted strings


def build_example(folder: Path, seed: int = 0) -> ExampleFiles:
    """Train the teacher on every training label, then write the job's files into `folder`."""
    import torch

    (x, y), (x_val, y_val) = digit_images(seed)
    (x_labeled, y_labeled), x_transfer = split_labels(x, y, seed=seed)
    started = time.monotonic()
    config = TeacherConfig()
    torch.manual_seed(seed)  # the teacher's initial weights
    teacher = cnn_teacher(config.channels, config.hidden)
    fit(teacher, x, y, epochs=config.epochs, lr=config.lr, seed=seed)
    seconds = time.monotonic() - started

    folder.mkdir(parents=True, exist_ok=True)
    files = ExampleFiles(
        teacher_onnx=folder / "teacher.onnx",
        train_npz=folder / "train.npz",
        transfer_npz=folder / "transfer.npz",
        val_npz=folder / "val.npz",
        job_yaml=folder / "job.yaml",
        teacher_val_accuracy=accuracy(teacher, x_val, y_val),
        teacher_params=sum(p.numel() for p in teacher.parameters()),
        teacher_seconds=seconds,
    )
    export_onnx(teacher, (1, 8, 8), files.teacher_onnx)
    np.savez(files.train_npz, x=x_labeled, y=y_labeled)
    np.savez(files.transfer_npz, x=x_transfer)
    np.savez(files.val_npz, x=x_val, y=y_val)
    files.job_yaml.write_text(to_yaml(job_spec(seed)) + "\n")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default="example", help="where to write (./example)")
    parser.add_argument("--seed", type=int, default=0, help="data split and teacher seed (0)")
    args = parser.parse_args()
    files = build_example(Path(args.folder), args.seed)
    print(
        f"teacher: {files.teacher_params:,} parameters, validation accuracy "
        f"{100 * files.teacher_val_accuracy:.1f} % (trained in {files.teacher_seconds:.0f} s)"
    )
    for path in (files.teacher_onnx, files.train_npz, files.transfer_npz, files.val_npz):
        print(f"wrote {path}")
    print(f"wrote {files.job_yaml} (its ids to fill: TEACHER_ID, TRAIN_ID, TRANSFER_ID, VAL_ID)")


if __name__ == "__main__":
    main()
