"""The gateway's registries (catalog, core.spec) name what the engine builds."""

from __future__ import annotations

from catalog.students import FAMILIES
from core.spec import LOSS_PARAMS, LOSSES_NEEDING_LABELS
from distill.losses import LOSSES
from distill.students import STUDENTS


def test_loss_names_match_the_engine() -> None:
    assert set(LOSS_PARAMS) == set(LOSSES)
    assert LOSSES_NEEDING_LABELS == {name for name, cls in LOSSES.items() if cls.needs_labels}


def test_student_families_match_the_zoo() -> None:
    assert set(FAMILIES) == set(STUDENTS)
