"""What a stage hands back to the pipeline: its outputs (artifact keys and
small results, recorded on its stage row for the stages after it) and, for
the last stage, the student to register and the job's summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.lifecycle import Student


@dataclass(frozen=True)
class StageResult:
    outputs: dict[str, Any]
    student: Student | None = None
    summary: dict[str, Any] | None = None
