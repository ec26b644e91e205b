"""`stillhouse worker --device cuda:all` starts one worker per GPU; on a host with
none it says so and exits, instead of starting a worker that can never run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU host would start real workers")
def test_cuda_all_without_a_gpu_is_a_clear_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stillhouse.cli", "worker", "--pool", "gpu", "--device", "cuda:all"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--device cuda:all found no GPU on this host" in done.stderr
