"""The stages of a job, declared once: their order for each kind of job, the
placement key that picks each one's pool, and the share of the job's progress
each one covers.

A distillation job (`kind: distill`, the default):

| stage             | placement key | default pool | progress  |
|-------------------|---------------|--------------|-----------|
| teacher_inference | teacher       | auto         | 0.00-0.10 |
| training          | student       | auto         | 0.10-0.85 |
| evaluation        | student       | auto         | 0.85-0.90 |
| export            | export        | cpu          | 0.90-0.95 |
| benchmark         | benchmark     | cpu          | 0.95-1.00 |

A batch inference job (`kind: inference`) is its one teacher_inference stage
(0.00-1.00): the model over a dataset, its logits kept as a download and as
the teacher-output cache a later distillation job reads.

The default pool is the `PlacementSpec` field's default, so the table cannot
drift from the spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.queues import Pool, Stage
from core.spec import PlacementSpec


@dataclass(frozen=True)
class StageDef:
    name: Stage
    placement: str  # the PlacementSpec field that names this stage's pool
    progress: tuple[float, float]  # the job's progress when the stage starts and ends

    @property
    def default_pool(self) -> str:
        return str(PlacementSpec.model_fields[self.placement].default)

    def requested_pool(self, spec: Mapping[str, object]) -> str:
        """The pool the job asks for: `auto`, `cpu`, `gpu` or an operator's name."""
        placement = spec.get("placement")
        chosen = placement.get(self.placement) if isinstance(placement, dict) else None
        return str(chosen or self.default_pool)


PIPELINE: tuple[StageDef, ...] = (
    StageDef(Stage.TEACHER_INFERENCE, "teacher", (0.0, 0.1)),
    StageDef(Stage.TRAINING, "student", (0.1, 0.85)),
    StageDef(Stage.EVALUATION, "student", (0.85, 0.9)),
    StageDef(Stage.EXPORT, "export", (0.9, 0.95)),
    StageDef(Stage.BENCHMARK, "benchmark", (0.95, 1.0)),
)
INFERENCE_PIPELINE: tuple[StageDef, ...] = (
    StageDef(Stage.TEACHER_INFERENCE, "teacher", (0.0, 1.0)),
)
PIPELINES: dict[str, tuple[StageDef, ...]] = {
    "distill": PIPELINE,
    "inference": INFERENCE_PIPELINE,
}
# The training stage's runs, in order, and the prefix of each one's metric names.
TRAINING_RUNS = {"student": "", "baseline": "baseline/"}
BENCHMARK = PIPELINE[-1]
# Every stage's definition in a distillation job; a stage starts at the same progress in
# every kind of job, so a claim can set it knowing only the stage's name.
BY_NAME: dict[str, StageDef] = {d.name.value: d for d in PIPELINE}


def job_kind(spec: Mapping[str, object]) -> str:
    return str(spec.get("kind") or "distill")


def pipeline_of(spec: Mapping[str, object]) -> tuple[StageDef, ...]:
    return PIPELINES[job_kind(spec)]


def stage_of(spec: Mapping[str, object], name: str) -> StageDef:
    return next(d for d in pipeline_of(spec) if d.name.value == name)


def next_stage(spec: Mapping[str, object], name: str) -> StageDef | None:
    pipeline = pipeline_of(spec)
    names = [d.name.value for d in pipeline]
    position = names.index(name)
    return pipeline[position + 1] if position + 1 < len(pipeline) else None


def resolve_pool(requested: str, live: Mapping[str, int]) -> str:
    """`auto` means the GPU pool when a live GPU worker exists, else CPU."""
    if requested != "auto":
        return requested
    return Pool.GPU.value if live.get(Pool.GPU.value, 0) > 0 else Pool.CPU.value


def place(stage: StageDef, spec: Mapping[str, object], live: Mapping[str, int]) -> Placement:
    """The pool a stage goes to, given the live workers per pool, and a warning when
    nobody serves that pool: the job is accepted and waits, and says why."""
    pool = resolve_pool(stage.requested_pool(spec), live)
    if live.get(pool, 0) > 0:
        return Placement(pool, None)
    return Placement(
        pool,
        f"No live worker serves pool '{pool}' (placement.{stage.placement}); stage "
        f"{stage.name.value} waits until one starts (stillhouse worker --pool {pool}).",
    )


@dataclass(frozen=True)
class Placement:
    pool: str
    warning: str | None
