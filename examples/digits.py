"""A real teacher and real data to distill: an MLP trained on scikit-learn's
bundled digits (no download), exported to ONNX, and the digits split into a
labeled train set, a validation set and an unlabeled transfer set.

    .venv/bin/python examples/digits.py digits    # writes digits/{teacher.onnx,*.npz}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DigitsFiles:
    teacher_onnx: Path
    train_npz: Path
    val_npz: Path
    transfer_npz: Path
    teacher_val_accuracy: float


def export_teacher(net: Any, features: int, path: Path) -> None:
    """A flat-input classifier as one self-contained ONNX file (input "input", output
    "logits", a dynamic batch dim): what a user uploads as a teacher."""
    from examples.digits_kd import export_onnx

    export_onnx(net, (features,), path)


def build_digits(folder: Path, epochs: int = 60, seed: int = 0) -> DigitsFiles:
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # (1797, 64), pixel values 0..16
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:360], order[360:]
    # Half the training images lose their labels: a transfer set the teacher labels.
    labeled, unlabeled = train[: len(train) // 2], train[len(train) // 2 :]

    torch.manual_seed(seed)
    teacher = torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )
    optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(epochs):
        for batch in torch.randperm(len(xt)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(teacher(xt[batch]), yt[batch]).backward()
            optimizer.step()
    teacher.eval()
    with torch.no_grad():
        accuracy = (teacher(torch.from_numpy(x[val])).argmax(1).numpy() == y[val]).mean()

    folder.mkdir(parents=True, exist_ok=True)
    files = DigitsFiles(
        teacher_onnx=folder / "teacher.onnx",
        train_npz=folder / "train.npz",
        val_npz=folder / "val.npz",
        transfer_npz=folder / "transfer.npz",
        teacher_val_accuracy=float(accuracy),
    )
    export_teacher(teacher, 64, files.teacher_onnx)
    np.savez(files.train_npz, x=x[labeled], y=y[labeled])
    np.savez(files.val_npz, x=x[val], y=y[val])
    np.savez(files.transfer_npz, x=x[unlabeled])
    return files


if __name__ == "__main__":
    import sys

    files = build_digits(Path(sys.argv[1] if len(sys.argv) > 1 else "digits"))
    print(f"teacher validation accuracy {files.teacher_val_accuracy:.4f}")
    for path in (files.teacher_onnx, files.train_npz, files.val_npz, files.transfer_npz):
        print(f"wrote {path}")
