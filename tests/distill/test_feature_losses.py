"""hint, attention, rkd and dkd against values worked out with numpy (not the code under
test), gradcheck in double precision, and a hint run that resumes bit-exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distill.checkpoint import TrainState, load_checkpoint, save_checkpoint
from distill.features import FeatureTap
from distill.loop import TrainConfig, train
from distill.losses import LOSSES, LossBatch, build_loss
from distill.students import build_student

S = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
T = np.array([[3.0, 2.0, 1.0], [0.0, 0.0, 2.0]])


def t32(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((p * np.log(p / q)).sum())


def huber(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < 1, 0.5 * x * x, np.abs(x) - 0.5)


def test_dkd_matches_zhao_formula_with_teacher_argmax_on_unlabeled_rows() -> None:
    temp, alpha, beta = 2.0, 1.0, 8.0
    labels = [2, -1]  # row 1 unlabeled: its target is the teacher's argmax, 2
    total = 0.0
    for s_row, t_row, g in zip(S, T, [2, int(T[1].argmax())], strict=True):
        p, q = softmax(t_row / temp), softmax(s_row / temp)
        tckd = kl(np.array([p[g], 1 - p[g]]), np.array([q[g], 1 - q[g]]))
        rest = [c for c in range(3) if c != g]
        nckd = kl(p[rest] / p[rest].sum(), q[rest] / q[rest].sum())
        total += alpha * tckd + beta * nckd
    expected = temp**2 * total / 2
    term = LOSSES["dkd"](alpha=alpha, beta=beta, temperature=temp)
    got = term(LossBatch(t32(S), t32(T), torch.tensor(labels)))
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # All labeled takes the fast path; same value with the label as the target.
    term.all_labeled = True
    again = term(LossBatch(t32(S), t32(T), torch.tensor([2, 2])))
    assert again.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_hint_flat_uses_a_linear_regressor() -> None:
    s = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 2.0]])  # (B, 3)
    t = np.array([[1.0, 0.0], [-1.0, 3.0]])  # (B, 2)
    w = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])
    b = np.array([0.1, -0.2])
    term = LOSSES["hint"](teacher_tensor="t", student_layer="s")
    term.bind((3,), (2,), 2)
    with torch.no_grad():
        term.regressor.weight.copy_(t32(w))
        term.regressor.bias.copy_(t32(b))
    expected = ((s @ w.T + b - t) ** 2).mean()
    got = term(LossBatch(t32(S), None, None, {"s": t32(s)}, {"t": t32(t)}))
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_hint_spatial_uses_a_1x1_conv_and_pools_to_the_teacher_size() -> None:
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 2, 2))  # (B, C, L)
    w, b = rng.normal(size=(2, 3)), rng.normal(size=2)
    term = LOSSES["hint"](teacher_tensor="t", student_layer="s")
    term.bind((3, 4), (2, 2), 2)
    with torch.no_grad():
        term.regressor.weight.copy_(t32(w)[:, :, None])
        term.regressor.bias.copy_(t32(b))
    r = np.einsum("oc,bcl->bol", w, s) + b[None, :, None]  # (B, 2, 4)
    pooled = np.stack([r[..., 0:2].mean(-1), r[..., 2:4].mean(-1)], axis=-1)  # (B, 2, 2)
    expected = ((pooled - t) ** 2).mean()
    got = term(LossBatch(t32(S), None, None, {"s": t32(s)}, {"t": t32(t)}))
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_attention_matches_zagoruyko_maps() -> None:
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4))

    def at(f: np.ndarray) -> np.ndarray:
        q = (f**2).mean(axis=1)  # (B, L)
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    expected = ((at(s) - at(t)) ** 2).mean()
    term = LOSSES["attention"](teacher_tensor="t", student_layer="s")
    term.bind((3, 4), (5, 4), 2)
    got = term(LossBatch(t32(S), None, None, {"s": t32(s)}, {"t": t32(t)}))
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_rkd_matches_park_distance_and_angle() -> None:
    rng = np.random.default_rng(2)
    es, et = rng.normal(size=(3, 2)), rng.normal(size=(3, 4))

    def psi_d(e: np.ndarray) -> np.ndarray:
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(3)] for i in range(3)])
        return d / (d.sum() / 6)

    def psi_a(e: np.ndarray) -> np.ndarray:
        out = np.zeros((3, 3, 3))
        for j in range(3):
            for i in range(3):
                for k in range(3):
                    if i == j or k == j:
                        continue
                    u, v = e[i] - e[j], e[k] - e[j]
                    out[j, i, k] = u @ v / np.linalg.norm(u) / np.linalg.norm(v)
        return out

    off = 1 - np.eye(3)
    l_d = (huber(psi_d(es) - psi_d(et)) * off).sum() / 6
    l_a = huber(psi_a(es) - psi_a(et)).mean()
    term = LOSSES["rkd"](distance_weight=25.0, angle_weight=50.0)  # on the logits
    got = term(LossBatch(t32(es), t32(et), None))
    assert got.item() == pytest.approx(25 * l_d + 50 * l_a, rel=1e-4, abs=1e-5)


def test_gradcheck_in_double() -> None:
    torch.manual_seed(0)
    s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 4, dtype=torch.float64)
    labels = torch.tensor([1, -1, 3])
    dkd = LOSSES["dkd"]()
    assert torch.autograd.gradcheck(lambda z: dkd(LossBatch(z, t, labels)), (s,))
    rkd = LOSSES["rkd"]()
    assert torch.autograd.gradcheck(lambda z: rkd(LossBatch(z, t, None)), (s,))
    fs = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    ft = torch.randn(3, 3, 5, dtype=torch.float64)
    att = LOSSES["attention"](teacher_tensor="t", student_layer="s")
    att.bind((2, 5), (3, 5), 4)
    assert torch.autograd.gradcheck(
        lambda z: att(LossBatch(s, None, None, {"s": z}, {"t": ft})), (fs,)
    )
    hint = LOSSES["hint"](teacher_tensor="t", student_layer="s")
    hint.bind((2, 5), (3, 5), 4)
    hint.double()
    assert torch.autograd.gradcheck(
        lambda z: hint(LossBatch(s, None, None, {"s": z}, {"t": ft})), (fs,)
    )


def _hint_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 12)).astype(np.float32)
    y = (x[:, :3].argmax(1)).astype(np.int64)
    t = np.eye(3, dtype=np.float32)[y] * 4
    feats = rng.normal(size=(64, 5, 6)).astype(np.float32)  # a (C, L) teacher tensor
    return x, y, t, feats


def test_hint_trains_checkpoints_its_projection_and_resumes_bit_exactly(tmp_path: Path) -> None:
    x, y, t, feats = _hint_data()
    terms = [{"name": "kd", "weight": 0.5}, {"name": "hint", "weight": 0.5, "teacher_tensor": "f"}]
    config = TrainConfig(epochs=4, batch_size=16, lr=1e-2, seed=5)

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_student("cnn1d", {"channels": 4, "layers": 2}, (12,), 3)

    whole_model, whole_loss = model(), build_loss(terms, "features")
    whole = train(whole_model, x, y, t, whole_loss, config, teacher_features={"f": feats})
    assert "loss/hint" in whole.history[-1].values
    assert not whole_model.features._forward_hooks  # unhooked after training
    states: list[TrainState] = []
    train(
        model(),
        x,
        y,
        t,
        build_loss(terms, "features"),
        config,
        teacher_features={"f": feats},
        on_checkpoint=states.append,
        checkpoint_every_s=0,
    )
    save_checkpoint(states[1], tmp_path / "c.pt")
    state = load_checkpoint(tmp_path / "c.pt")
    assert state.loss and any(k.endswith("regressor.weight") for k in state.loss)
    resumed_model, resumed_loss = model(), build_loss(terms, "features")
    resumed = train(
        resumed_model, x, y, t, resumed_loss, config, teacher_features={"f": feats}, resume=state
    )
    assert resumed.history[-1].values == whole.history[-1].values
    for key, value in whole_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key
    for key, value in whole_loss.state_dict().items():
        assert torch.equal(resumed_loss.state_dict()[key], value), key


def test_feature_errors_are_sentences() -> None:
    x, y, t, feats = _hint_data()
    config = TrainConfig(epochs=1)
    net = build_student("cnn1d", {"channels": 4}, (12,), 3)
    hint = build_loss([{"name": "hint", "teacher_tensor": "f", "student_layer": "nope"}])
    with pytest.raises(Exception, match="no module 'nope'.*features"):
        train(net, x, y, t, hint, config, teacher_features={"f": feats})
    assert not any(m._forward_hooks for m in net.modules())
    att = build_loss([{"name": "attention", "teacher_tensor": "f"}], "features")
    with pytest.raises(Exception, match="needs the teacher tensor|not computed"):
        train(net, x, y, t, att, config, teacher_features={})
    with FeatureTap(net, ["features"]) as tap:
        net(torch.zeros(2, 12))
        assert tap.outputs["features"].shape == (2, 4, 12)
    assert not net.features._forward_hooks
