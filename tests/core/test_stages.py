"""The declared stage tables agree with the job spec and the workers' runners."""

from __future__ import annotations

from core.spec import PlacementSpec
from core.stages import PIPELINE, PIPELINES, next_stage, pipeline_of, place


def test_every_stage_is_placed_by_a_spec_field() -> None:
    for pipeline in PIPELINES.values():
        for stage in pipeline:
            assert stage.placement in PlacementSpec.model_fields, stage
    assert [s.default_pool for s in PIPELINE] == ["auto", "auto", "auto", "cpu", "cpu"]
    assert PIPELINE[-1].name.value == "benchmark"  # measured after export, on its own pool


def test_progress_ranges_tile_zero_to_one() -> None:
    for kind, pipeline in PIPELINES.items():
        spec = {"kind": kind}
        assert pipeline_of(spec) == pipeline
        assert pipeline[0].progress[0] == 0.0 and pipeline[-1].progress[1] == 1.0
        for stage in pipeline[:-1]:
            following = next_stage(spec, stage.name.value)
            assert following is not None and following.progress[0] == stage.progress[1]
        assert next_stage(spec, pipeline[-1].name.value) is None
    assert pipeline_of({}) == PIPELINE  # a spec without a kind is a distillation job


def test_every_stage_has_a_runner() -> None:
    from workers.pipeline import RUNNERS

    assert set(RUNNERS) == {s.name.value for p in PIPELINES.values() for s in p}


def test_auto_is_gpu_only_with_a_live_gpu_worker_and_empty_pools_warn() -> None:
    teacher, benchmark = PIPELINE[0], PIPELINE[-1]
    assert place(teacher, {}, {"cpu": 1}).pool == "cpu"
    assert place(teacher, {}, {"cpu": 1, "gpu": 2}).pool == "gpu"
    assert place(teacher, {}, {"cpu": 1}).warning is None
    edge = place(benchmark, {"placement": {"benchmark": "edge"}}, {"cpu": 1})
    assert edge.pool == "edge"
    assert edge.warning is not None and "pool 'edge'" in edge.warning
    assert "placement.benchmark" in edge.warning
    # auto falls back to cpu even when cpu has nobody either; the warning names cpu
    lonely = place(teacher, {}, {})
    assert lonely.pool == "cpu" and lonely.warning is not None and "'cpu'" in lonely.warning
