"""The declared stage table agrees with the job spec and the workers' runners."""

from __future__ import annotations

from core.spec import PlacementSpec
from core.stages import BENCHMARK, PIPELINE, next_stage


def test_every_stage_is_placed_by_a_spec_field() -> None:
    for stage in (*PIPELINE, BENCHMARK):
        assert stage.placement in PlacementSpec.model_fields, stage
    assert [s.default_pool for s in PIPELINE] == ["auto", "auto", "auto", "cpu"]


def test_progress_ranges_tile_zero_to_one() -> None:
    assert PIPELINE[0].progress[0] == 0.0 and PIPELINE[-1].progress[1] == 1.0
    for stage in PIPELINE[:-1]:
        following = next_stage(stage.name.value)
        assert following is not None and following.progress[0] == stage.progress[1]
    assert next_stage(PIPELINE[-1].name.value) is None


def test_every_stage_has_a_runner() -> None:
    from workers.pipeline import RUNNERS

    assert list(RUNNERS) == [s.name.value for s in PIPELINE]
