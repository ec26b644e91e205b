"""The gateway's copy of the engine's registry names stays equal to the engine's."""

from __future__ import annotations

from core.spec import LOSS_PARAMS, LOSSES_NEEDING_LABELS, STUDENT_ARCHITECTURES
from distill.losses import LOSSES
from distill.students import STUDENTS


def test_loss_names_match_the_engine() -> None:
    assert set(LOSS_PARAMS) == set(LOSSES)
    assert LOSSES_NEEDING_LABELS == {name for name, cls in LOSSES.items() if cls.needs_labels}


def test_student_architectures_match_the_zoo() -> None:
    assert set(STUDENT_ARCHITECTURES) == set(STUDENTS)
