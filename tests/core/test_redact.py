"""Absolute server paths leave error sentences; everything else stays as written."""

from __future__ import annotations

import pytest

from core.redact import NEUTRAL, redact_paths


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[Errno 2] No such file or directory: '/tmp/pytest-7/data0/artifacts/blobs/ab/abc123'",
            "[Errno 2] No such file or directory: 'abc123'",
        ),
        (
            "The data file '/srv/stillhouse/var/x.npz' does not exist.",
            "The data file 'x.npz' does not exist.",
        ),
        ("failed at /tmp/tmpq1w2e3/model.onnx.", "failed at model.onnx."),
        (
            "Load model from /var/lib/x/m.onnx failed:Protobuf parsing",
            "Load model from m.onnx failed:Protobuf parsing",
        ),
        ("cannot open file:///data/stillhouse/artifacts/k (denied)", "cannot open k (denied)"),
        ("the folder /var/lib/stillhouse/ is full", f"the folder {NEUTRAL} is full"),
        ("(/home/u/a.npz, /opt/b/c.onnx)", "(a.npz, c.onnx)"),
    ],
)
def test_absolute_paths_become_file_names(text: str, expected: str) -> None:
    assert redact_paths(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "see https://onnx.ai/onnx/repo-docs/ExternalData.html for more",
        "s3://bucket/prefix/key is not local",
        "accuracy 3/4 on 2026/11/28, and/or a ratio of 1/2/3",
        "a relative path models/teacher.onnx and a lone /root",
        "shape (N, 0) / 2 and x / y",
        "",
    ],
)
def test_everything_else_is_left_alone(text: str) -> None:
    assert redact_paths(text) == text
