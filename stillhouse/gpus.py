"""One worker process per GPU:

    stillhouse worker --pool gpu --device cuda:all

starts `stillhouse worker --pool gpu --device cuda:N` for every visible GPU and
stops them together. Each child is its own process from the start (fork and
exec): a worker holds one device and runs one task at a time, and no process
that forks ever initialises CUDA. Even the count is taken in a short-lived
child, so this supervisor never touches CUDA itself."""

from __future__ import annotations

import signal
import subprocess
import sys

COUNT = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"


def visible_gpus() -> int:
    try:
        done = subprocess.run(
            [sys.executable, "-c", COUNT], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    text = done.stdout.strip().splitlines()
    return int(text[-1]) if done.returncode == 0 and text and text[-1].isdigit() else 0


def run_per_gpu(pool: str, log_level: str) -> int:
    count = visible_gpus()
    if count == 0:
        print("error: --device cuda:all found no GPU on this host", file=sys.stderr)
        return 2
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stillhouse.cli",
                "worker",
                "--pool",
                pool,
                "--device",
                f"cuda:{index}",
                "--log-level",
                log_level,
            ]
        )
        for index in range(count)
    ]

    def stop(signum: int, _: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return max(child.wait() for child in children)
