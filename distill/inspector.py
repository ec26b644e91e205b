"""Inspect a data set in a child process under a memory ceiling.

The child sets RLIMIT_AS on itself before it reads the file, so a file that
needs more memory than planned (a bomb nobody foresaw) ends in a MemoryError
and a sentence, never in the kernel's out-of-memory killer taking the worker.
It imports numpy and the scanner only: about 0.15 s to start. It dies with
its parent (PR_SET_PDEATHSIG), so a killed worker leaves no inspector behind.

python -m distill.inspector PATH MAX_BYTES MAX_CLASSES MEMORY_BYTES PAUSE_S PARENT_PID [JOB]
# prints one JSON line: {"info": {...}} or {"error": "<sentence>"}

With JOB (a JSON object {"format", "options", "out", "zip"}) the child also
converts the file into the canonical arrays under JOB["out"] (distill.canonical)
and answers {"info": {...}, "arrays": {"x", "y", "x_dtype", "classes"}} with the
files' paths.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distill.errors import DistillError
from distill.npz_scan import DatasetInfo, inspect_npz

# The child's exit status when it ran out of its memory ceiling.
MEMORY_EXIT = 86
# One BLAS thread: the scan does no linear algebra, and each BLAS thread reserves address
# space that would count against the ceiling.
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Limits:
    max_bytes: int  # the arrays, decoded and converted for training
    max_classes: int
    memory_bytes: int  # the child's address space
    max_zip_entries: int = 100_000
    max_zip_expanded_bytes: int = 2 * 1024**3


@dataclass(frozen=True)
class Conversion:
    """What to convert into where: the upload's format and options, and the folder the
    canonical x.npy / y.npy go to (the caller's, deleted by it)."""

    format: str
    options: dict[str, Any]
    out: str


class InspectionStopped(Exception):
    """The caller's `keep_going` said stop (the claim on the upload was lost)."""


def inspect_isolated(
    path: str | os.PathLike[str],
    limits: Limits,
    keep_going: Callable[[], bool] = lambda: True,
    poll_s: float = 1.0,
    pause_s: float = 0.0,
) -> DatasetInfo:
    """Run `inspect_npz` in a child; `keep_going` is called every `poll_s` while it runs
    (the worker renews its claim there) and, when it returns False, the child is killed
    and InspectionStopped raised. `pause_s` delays the child (fault tests only)."""
    return _run(path, limits, keep_going, poll_s, pause_s, None)[0]


def convert_isolated(
    path: str | os.PathLike[str],
    limits: Limits,
    conversion: Conversion,
    keep_going: Callable[[], bool] = lambda: True,
    poll_s: float = 1.0,
    pause_s: float = 0.0,
) -> tuple[DatasetInfo, dict[str, Any]]:
    """Like inspect_isolated, and convert the file into the canonical arrays under
    `conversion.out`: returns the info and {"x": path, "y": path | None, "x_dtype",
    "classes"}."""
    info, arrays = _run(path, limits, keep_going, poll_s, pause_s, conversion)
    assert arrays is not None
    return info, arrays


def _run(
    path: str | os.PathLike[str],
    limits: Limits,
    keep_going: Callable[[], bool],
    poll_s: float,
    pause_s: float,
    conversion: Conversion | None,
) -> tuple[DatasetInfo, dict[str, Any] | None]:
    args = [os.fspath(path), limits.max_bytes, limits.max_classes, limits.memory_bytes]
    command = [sys.executable, "-m", "distill.inspector", *map(str, args), str(pause_s)]
    command.append(str(os.getpid()))
    if conversion is not None:
        job = {
            **asdict(conversion),
            "zip": [limits.max_zip_entries, limits.max_zip_expanded_bytes],
        }
        command.append(json.dumps(job))
    env = {**os.environ, **CHILD_ENV}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as child:
        try:
            out, err = _wait(child, keep_going, poll_s)
        except BaseException:
            child.kill()
            raise
    return _result(child.returncode, out, err, limits)


def _wait(
    child: subprocess.Popen[bytes], keep_going: Callable[[], bool], poll_s: float
) -> tuple[bytes, bytes]:
    while True:
        try:
            return child.communicate(timeout=poll_s)
        except subprocess.TimeoutExpired:
            if not keep_going():
                raise InspectionStopped("the inspection was stopped by its caller") from None


def _result(
    code: int, out: bytes, err: bytes, limits: Limits
) -> tuple[DatasetInfo, dict[str, Any] | None]:
    if code == MEMORY_EXIT:
        raise DistillError(
            f"Inspecting this file needed more memory than an inspection may use "
            f"({limits.memory_bytes} bytes); upload a smaller dataset, or ask the operator to "
            "raise STILLHOUSE_INSPECT_MEMORY_BYTES."
        )
    if code < 0:
        name = signal.Signals(-code).name
        raise DistillError(
            f"The inspector stopped while reading this file ({name}: it crashed or ran out of "
            "memory); check that the file is a valid .npz of numeric arrays and re-upload it."
        )
    try:
        answer = json.loads(out.decode())
    except ValueError:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise DistillError(
            f"Stillhouse could not read this dataset (the inspector exited with status {code}: "
            f"{tail[0]})."
        ) from None
    if "error" in answer:
        raise DistillError(answer["error"])
    info = answer["info"]
    return DatasetInfo(**{**info, "sample_shape": tuple(info["sample_shape"])}), answer.get(
        "arrays"
    )


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _convert(path: str, max_bytes: int, max_classes: int, raw: str) -> dict[str, object]:
    from distill.canonical import convert
    from distill.image_zip import ZipLimits

    job = json.loads(raw)
    entries, expanded = job["zip"]
    out = Path(job["out"])
    done = convert(
        job["format"],
        path,
        job["options"] or {},
        out,
        max_bytes,
        max_classes,
        ZipLimits(entries, expanded, max_bytes),
    )
    info = DatasetInfo(
        num_samples=done.num_samples,
        sample_shape=done.sample_shape,
        num_classes=done.num_classes,
        labeled=done.y_path is not None,
        x_dtype=done.source_dtype,
    )
    arrays = {
        "x": str(done.x_path),
        "y": None if done.y_path is None else str(done.y_path),
        "x_dtype": done.x_dtype,
        "classes": None if done.classes is None else list(done.classes),
    }
    return {"info": asdict(info), "arrays": arrays}


def main(argv: list[str]) -> int:
    path, max_bytes, max_classes, memory_bytes, pause_s, parent, *job = argv
    _die_with_parent(int(parent))
    resource.setrlimit(resource.RLIMIT_AS, (int(memory_bytes), int(memory_bytes)))
    time.sleep(float(pause_s))
    try:
        if job:
            answer: dict[str, object] = _convert(path, int(max_bytes), int(max_classes), job[0])
        else:
            answer = {"info": asdict(inspect_npz(path, int(max_bytes), int(max_classes)))}
    except DistillError as exc:
        answer = {"error": str(exc)}
    except MemoryError:
        os._exit(MEMORY_EXIT)  # no cleanup: it could need memory there is none of
    except Exception as exc:
        answer = {"error": f"Stillhouse could not read this dataset ({type(exc).__name__}: {exc})."}
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
