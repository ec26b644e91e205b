"""The gateway never imports torch, onnxruntime or the engine (DESIGN.md section 1)."""

from __future__ import annotations

import subprocess
import sys


def test_gateway_process_never_imports_torch() -> None:
    code = (
        "import sys, service.main; "
        "bad = sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'distill', 'numpy') "
        "if m in sys.modules); "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
