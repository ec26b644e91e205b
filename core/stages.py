"""The stages of a job, declared once: their order, the placement key that
picks each one's pool, and the share of the job's progress each one covers.

| stage             | placement key | default pool | progress  |
|-------------------|---------------|--------------|-----------|
| teacher_inference | teacher       | auto         | 0.00-0.10 |
| training          | student       | auto         | 0.10-0.90 |
| evaluation        | student       | auto         | 0.90-0.95 |
| export            | export        | cpu          | 0.95-1.00 |
| benchmark         | benchmark     | cpu          | (next)    |

The default pool is the `PlacementSpec` field's default, so the table cannot
drift from the spec. `benchmark` is declared but not yet in `PIPELINE`.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.queues import Stage
from core.spec import PlacementSpec


@dataclass(frozen=True)
class StageDef:
    name: Stage
    placement: str  # the PlacementSpec field that names this stage's pool
    progress: tuple[float, float]  # the job's progress when the stage starts and ends

    @property
    def default_pool(self) -> str:
        return str(PlacementSpec.model_fields[self.placement].default)

    def requested_pool(self, spec: dict[str, object]) -> str:
        """The pool the job asks for: `auto`, `cpu`, `gpu` or an operator's name."""
        placement = spec.get("placement")
        chosen = placement.get(self.placement) if isinstance(placement, dict) else None
        return str(chosen or self.default_pool)


PIPELINE: tuple[StageDef, ...] = (
    StageDef(Stage.TEACHER_INFERENCE, "teacher", (0.0, 0.1)),
    StageDef(Stage.TRAINING, "student", (0.1, 0.9)),
    StageDef(Stage.EVALUATION, "student", (0.9, 0.95)),
    StageDef(Stage.EXPORT, "export", (0.95, 1.0)),
)
# The training stage's runs, in order, and the prefix of each one's metric names.
TRAINING_RUNS = {"student": "", "baseline": "baseline/"}
BENCHMARK = StageDef(Stage.BENCHMARK, "benchmark", (0.95, 1.0))
BY_NAME: dict[str, StageDef] = {d.name.value: d for d in PIPELINE}


def next_stage(name: str) -> StageDef | None:
    names = [d.name.value for d in PIPELINE]
    position = names.index(name)
    return PIPELINE[position + 1] if position + 1 < len(PIPELINE) else None
