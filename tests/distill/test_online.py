"""Online KD: the teacher runs on each batch. Without noise it trains like the cached logits;
with noise the teacher sees the noisy batch, the noise is the seed's, and a resume is exact."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.checkpoint import TrainState, load_checkpoint, save_checkpoint
from distill.errors import DistillError
from distill.loop import TrainConfig, TrainResult, train
from distill.losses import build_loss
from distill.students import build_student
from tests.distill.test_loop import count_host_syncs

KD_CE = [{"name": "kd", "weight": 0.9}, {"name": "ce", "weight": 0.1}]
ATOL = 1e-5  # float32: the teacher's batched and whole-set matmuls round differently


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models: extra intra-op threads only spin on a busy 2-core host."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blobs(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs in 8-D, the same centres for every seed."""
    centres = np.random.default_rng(0).normal(0, 3, (3, 8))
    rng = np.random.default_rng(seed + 1)
    y = rng.integers(0, 3, n)
    x = (centres[y] + rng.normal(0, 1, (n, 8))).astype(np.float32)  # (N, 8)
    return x, y.astype(np.int64)


def tiny_teacher() -> torch.nn.Module:
    """A small MLP fitted to the blobs (full-batch Adam), frozen in eval mode."""
    torch.manual_seed(42)
    teacher = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    x, y = blobs()
    optimizer = torch.optim.Adam(teacher.parameters(), lr=3e-2)
    for _ in range(30):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(
            teacher(torch.from_numpy(x)), torch.from_numpy(y)
        ).backward()
        optimizer.step()
    return teacher.eval().requires_grad_(False)


class Recording:
    """The teacher, keeping a copy of every batch it is asked about (the first is the 2-sample
    probe train() makes before training)."""

    def __init__(self, teacher: torch.nn.Module) -> None:
        self.teacher, self.seen = teacher, []  # type: ignore[var-annotated]

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        self.seen.append(xb.clone())
        return self.teacher(xb)

    def batches(self) -> torch.Tensor:
        return torch.cat(self.seen[1:])  # (epochs * N, 8), in the order the student saw them


def student(dropout: float = 0.0, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_student("mlp", {"hidden": [16], "dropout": dropout}, (8,), 3)


def test_online_without_noise_trains_like_the_cached_logits() -> None:
    x, y = blobs()
    teacher = tiny_teacher()
    with torch.no_grad():
        t = teacher(torch.from_numpy(x)).numpy()  # (N, 3), the cached path's logits
    xv, yv = blobs(60, seed=1)
    with torch.no_grad():
        tv = teacher(torch.from_numpy(xv)).numpy()
    config = TrainConfig(epochs=4, batch_size=32, lr=1e-2, seed=5)
    cached_model, online_model = student(), student()
    cached = train(cached_model, x, y, t, build_loss(KD_CE), config, val=(xv, yv, tv))
    online = train(
        online_model,
        x,
        y,
        None,
        build_loss(KD_CE),
        TrainConfig(epochs=4, batch_size=32, lr=1e-2, seed=5, teacher=teacher),
        val=(xv, yv, tv),
    )
    for key, value in cached_model.state_dict().items():
        torch.testing.assert_close(online_model.state_dict()[key], value, rtol=0, atol=ATOL)
    for a, b in zip(cached.history, online.history, strict=True):
        assert a.values.keys() == b.values.keys()
        for name in a.values:
            assert b.values[name] == pytest.approx(a.values[name], abs=ATOL), name
    assert online.history[-1].values["val_agreement"] > 0.9  # it learned the teacher (chance: 1/3)
    assert online.history[-1].values["val_accuracy"] > 0.9


def test_noise_reaches_the_teacher_and_is_the_seeds() -> None:
    x, y = blobs()
    original = x.copy()

    def run(noise: float, seed: int) -> tuple[torch.Tensor, torch.nn.Module]:
        teacher = Recording(tiny_teacher())
        model = student()
        config = TrainConfig(
            epochs=2, batch_size=32, seed=seed, augment_noise=noise, teacher=teacher
        )
        train(model, x, y, None, build_loss(KD_CE), config)
        return teacher.batches(), model

    clean, _ = run(0.0, seed=3)
    noisy, noisy_model = run(0.5, seed=3)
    again, again_model = run(0.5, seed=3)
    other, _ = run(0.5, seed=4)
    np.testing.assert_array_equal(x, original)  # the caller's array is never touched
    # Without noise the teacher sees the training rows themselves, each once an epoch.
    assert clean.shape == (2 * len(x), 8)
    rows = torch.from_numpy(x)
    assert torch.equal(clean[: len(x)][clean[: len(x), 0].argsort()], rows[rows[:, 0].argsort()])
    # With noise it sees those rows (same seed, same order) plus N(0, 0.5^2) draws.
    drawn = noisy - clean  # (2N, 8)
    assert abs(float(drawn.mean())) < 0.05 and 0.45 < float(drawn.std()) < 0.55
    assert not torch.allclose(drawn[: len(x)], drawn[len(x) :])  # fresh noise each epoch
    # The same seed draws the same noise and ends with the same weights; another seed not.
    assert torch.equal(noisy, again)
    for key, value in noisy_model.state_dict().items():
        assert torch.equal(value, again_model.state_dict()[key]), key
    assert not torch.allclose(other, noisy)


def test_online_resume_with_noise_is_bit_identical(tmp_path: Path) -> None:
    x, y = blobs(96)
    xv, yv = blobs(48, seed=1)
    teacher = tiny_teacher()
    with torch.no_grad():
        tv = teacher(torch.from_numpy(xv)).numpy()
    config = TrainConfig(
        epochs=6, batch_size=16, lr=1e-2, seed=7, augment_noise=0.3, teacher=teacher
    )

    def run(model: torch.nn.Module, **kwargs: object) -> TrainResult:
        return train(model, x, y, None, build_loss(KD_CE), config, val=(xv, yv, tv), **kwargs)  # type: ignore[arg-type]

    whole_model = student(dropout=0.3)  # dropout: the global RNG must come back too
    whole = run(whole_model)
    states: list[TrainState] = []
    cut = run(
        student(dropout=0.3),
        on_checkpoint=states.append,
        checkpoint_every_s=0,
        should_stop=lambda: len(states) == 2,  # one step into epoch 3
    )
    assert cut.stopped_early and states[-1].epoch == 2
    save_checkpoint(states[-1], tmp_path / "epoch2.pt")
    resumed_model = student(dropout=0.3, seed=1)  # other weights: all come from the file
    resumed = run(resumed_model, resume=load_checkpoint(tmp_path / "epoch2.pt"))
    for key, value in whole_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key
    assert resumed.history == whole.history[2:]


def test_online_with_noise_syncs_once_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = blobs()
    config = TrainConfig(epochs=3, batch_size=16, augment_noise=0.1, teacher=tiny_teacher())
    syncs = count_host_syncs(monkeypatch)
    train(student(), x, y, None, build_loss(KD_CE), config)
    assert len(syncs) == 3


def test_noise_without_a_teacher_term_needs_no_teacher() -> None:
    x, y = blobs()
    config = TrainConfig(epochs=5, batch_size=32, lr=1e-2, augment_noise=0.3)
    result = train(student(), x, y, None, build_loss([{"name": "ce"}]), config)
    assert result.history[-1].values["train_accuracy"] > 0.8


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("cached_with_noise", "cached teacher logits describe the un-augmented inputs"),
        ("teacher_width", "as many classes as the teacher"),
        ("teacher_input", "The teacher cannot take samples of shape"),
        ("negative_noise", "augment_noise must be a finite number >= 0"),
        ("not_callable", "teacher must be a callable"),
    ],
)
def test_online_errors(case: str, fragment: str) -> None:
    x, y = blobs()
    t = np.zeros((len(x), 3), np.float32)
    with pytest.raises(DistillError, match=fragment):
        if case == "cached_with_noise":
            config = TrainConfig(augment_noise=0.1)
        elif case == "teacher_width":
            config = TrainConfig(teacher=torch.nn.Linear(8, 4))
        elif case == "teacher_input":
            config = TrainConfig(teacher=torch.nn.Linear(5, 3))
        elif case == "negative_noise":
            config = TrainConfig(augment_noise=-0.1)
        else:
            config = TrainConfig(teacher="teacher.onnx")  # type: ignore[arg-type]
        train(student(), x, y, t, build_loss(KD_CE), config)
