"""ONNX export round trip, ONNX teachers, and safetensors student files."""

from __future__ import annotations

import linecache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from distill.errors import DistillError
from distill.export import (
    export_onnx,
    forget_generated_sources,
    inspect_safetensors,
    load_student,
    parity_max_abs_diff,
    read_student_spec,
    save_student,
)
from distill.students import build_student
from distill.teachers import OnnxTeacher, inspect_onnx, session_options

SPEC = {
    "architecture": "cnn1d",
    "params": {"channels": 4},
    "input_shape": [2, 16],
    "num_classes": 5,
}


@pytest.fixture(scope="module")
def trained_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_student(SPEC["architecture"], SPEC["params"], (2, 16), 5)
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        model.train()(torch.randn(32, 2, 16) * 3 + 1)
    return model.eval()


@pytest.fixture(scope="module")
def onnx_path(trained_cnn: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "student.onnx"
    export_onnx(trained_cnn, (2, 16), path)
    return path


def test_export_round_trip_matches_torch(trained_cnn: torch.nn.Module, onnx_path: Path) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    x = torch.randn(7, 2, 16)  # a batch size the export never saw: the batch dim is dynamic
    (got,) = session.run(["logits"], {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, trained_cnn(x).numpy(), atol=1e-4)


def test_export_leaves_no_generated_sources_behind(
    trained_cnn: torch.nn.Module, tmp_path: Path
) -> None:
    """torch.fx keeps the source of every GraphModule the exporter builds (its eval cache and
    linecache) for the life of the process; a worker exports every job, so export_onnx drops
    them. The export still works and still matches torch."""
    cache = torch.fx.graph_module._loader.eval_cache
    export_onnx(trained_cnn, (2, 16), tmp_path / "first.onnx")  # any one-time set-up first
    keys, lines = set(cache), set(linecache.cache)
    for i in range(3):
        export_onnx(trained_cnn, (2, 16), tmp_path / f"again-{i}.onnx")
    assert set(cache) == keys
    assert not {k for k in set(linecache.cache) - lines if k.startswith("<eval_with_key>")}
    session = ort.InferenceSession(
        str(tmp_path / "again-2.onnx"), providers=["CPUExecutionProvider"]
    )
    x = torch.randn(4, 2, 16)
    (got,) = session.run(["logits"], {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, trained_cnn(x).numpy(), atol=1e-4)


def test_generated_sources_are_dropped_even_when_the_block_fails() -> None:
    """What the exporter generated before it raised goes too; what was there before stays."""
    loader = torch.fx.graph_module._loader
    kept = loader.cache("def kept(): pass\n", {})
    with pytest.raises(RuntimeError), forget_generated_sources():
        made = loader.cache("def made(): pass\n", {})
        assert made in loader.eval_cache and made in linecache.cache
        raise RuntimeError("the exporter failed")
    assert made not in loader.eval_cache and made not in linecache.cache
    assert kept in loader.eval_cache and kept in linecache.cache
    loader.eval_cache.pop(kept)
    linecache.cache.pop(kept)


def test_inspect_onnx_and_teacher(trained_cnn: torch.nn.Module, onnx_path: Path) -> None:
    info = inspect_onnx(onnx_path)
    assert info.format == "onnx"
    assert info.input_shape == [None, 2, 16] and info.output_shape == [None, 5]
    assert info.num_params > 0
    teacher = OnnxTeacher(onnx_path)
    x = np.random.default_rng(0).normal(size=(9, 32)).astype(np.float32)  # flat: reshaped
    logits = teacher.predict_logits(x, batch_size=4)
    with torch.no_grad():
        expected = trained_cnn(torch.from_numpy(x).reshape(9, 2, 16)).numpy()
    assert logits.shape == (9, 5) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    with pytest.raises(DistillError, match="teacher expects \\[2, 16\\]"):
        teacher.predict_logits(np.zeros((3, 31), dtype=np.float32))


def gemm_model(path: Path, batch: int | str, inputs: int = 1) -> None:
    """y = x @ W (3 -> 2), built by hand; a fixed batch when `batch` is an int."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [3, 2], [1, 0, 0, 1, 1, 1])
    ins = [
        helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [batch, 3]) for i in range(inputs)
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x0", "W"], ["y"])], "g", ins, [out], initializer=[w]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_fixed_batch_teacher_pads(tmp_path: Path) -> None:
    path = tmp_path / "fixed.onnx"
    gemm_model(path, 4)
    info = inspect_onnx(path)
    assert info.input_shape == [4, 3] and info.output_shape == [4, 2] and info.num_params == 6
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    logits = OnnxTeacher(path).predict_logits(x, batch_size=1024)
    np.testing.assert_allclose(
        logits, np.stack([x[:, 0] + x[:, 2], x[:, 1] + x[:, 2]], 1), atol=1e-5
    )


def test_a_session_without_spinning_gives_the_same_outputs(tmp_path: Path) -> None:
    """spin=False (predict's sessions) changes only how idle threads wait."""
    assert (
        session_options(spin=False).get_session_config_entry("session.intra_op.allow_spinning")
        == "0"
    )
    path = tmp_path / "fixed.onnx"
    gemm_model(path, 4)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    quiet, default = OnnxTeacher(path, spin=False), OnnxTeacher(path)
    np.testing.assert_array_equal(quiet.run_raw(x), default.run_raw(x))


def test_bad_onnx_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    with pytest.raises(DistillError, match="The file is not a valid ONNX model"):
        inspect_onnx(junk)
    two = tmp_path / "two.onnx"
    gemm_model(two, "N", inputs=2)
    with pytest.raises(DistillError, match="exactly one float or int64 input"):
        inspect_onnx(two)


def test_save_load_round_trip(trained_cnn: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "student.safetensors"
    save_student(trained_cnn, path, SPEC)
    assert read_student_spec(path) == SPEC
    model, spec = load_student(path)
    assert spec == SPEC and not model.training
    x = torch.randn(4, 2, 16)
    with torch.no_grad():
        assert torch.equal(model(x), trained_cnn(x))
    info = inspect_safetensors(path, None)
    assert info.format == "safetensors"
    assert info.input_shape == [None, 2, 16] and info.output_shape == [None, 5]
    assert info.num_params == sum(p.numel() for p in trained_cnn.parameters())


def test_safetensors_errors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    torch.manual_seed(0)
    model = build_student("mlp", {"hidden": [8]}, (4,), 3)
    save_file(model.state_dict(), str(plain))
    with pytest.raises(DistillError, match="no Stillhouse student spec"):
        load_student(plain)
    spec = {"architecture": "mlp", "params": {"hidden": [8]}, "input_shape": [4], "num_classes": 3}
    assert inspect_safetensors(plain, spec).num_params == 4 * 8 + 8 + 8 * 3 + 3
    wrong = dict(spec, params={"hidden": [9]})
    with pytest.raises(DistillError, match="tensor 'net.1.weight' has shape \\[8, 4\\]"):
        inspect_safetensors(plain, wrong)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"garbage")
    with pytest.raises(DistillError, match="not a readable safetensors file"):
        read_student_spec(junk)


def test_load_plain_safetensors_with_explicit_spec(tmp_path: Path) -> None:
    # An upload with its spec in a separate form field: no metadata in the file itself.
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    torch.manual_seed(0)
    original = build_student("mlp", {"hidden": [8]}, (4,), 3).eval()
    save_file(original.state_dict(), str(plain))
    spec = {"architecture": "mlp", "params": {"hidden": [8]}, "input_shape": [4], "num_classes": 3}
    model, got = load_student(plain, spec=dict(spec, extra="dropped"))
    assert got == spec and not model.training
    x = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))
    with pytest.raises(DistillError, match="must be an object with architecture"):
        load_student(plain, spec={"architecture": "mlp"})
    with pytest.raises(DistillError, match="tensor 'net.1.weight' has shape"):
        load_student(plain, spec=dict(spec, params={"hidden": [9]}))


def test_parity_max_abs_diff(trained_cnn: torch.nn.Module, onnx_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(37, 2, 16)).astype(np.float32)
    assert parity_max_abs_diff(trained_cnn, onnx_path, x, batch_size=8) < 1e-4
    # Flat rows with as many values per sample are reshaped, as for a teacher.
    assert parity_max_abs_diff(trained_cnn, onnx_path, x.reshape(37, 32)) < 1e-4
    torch.manual_seed(1)
    other = build_student(SPEC["architecture"], SPEC["params"], (2, 16), 5).eval()
    assert parity_max_abs_diff(other, onnx_path, x) > 0.1
    with pytest.raises(DistillError, match="non-empty"):
        parity_max_abs_diff(trained_cnn, onnx_path, x[:0])


def test_parity_on_a_fixed_batch_model(tmp_path: Path) -> None:
    path = tmp_path / "fixed.onnx"
    gemm_model(path, 4)  # y = x @ W with W = [[1, 0], [0, 1], [1, 1]]
    linear = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
    x = np.arange(15, dtype=np.float32).reshape(5, 3)  # 5 rows: one full batch and one padded
    assert parity_max_abs_diff(linear, path, x) < 1e-5
