"""The catalog's registries, which the gateway reads, stay equal to the engine's."""

from __future__ import annotations

from catalog.losses import LOSSES as SCHEMAS
from catalog.losses import describe
from catalog.students import FAMILIES
from distill.losses import LOSSES
from distill.students import STUDENTS


def test_loss_names_match_the_engine() -> None:
    assert set(SCHEMAS) == set(LOSSES)
    assert {item["name"] for item in describe()} == set(LOSSES)
    for name, cls in LOSSES.items():
        assert SCHEMAS[name].needs_labels == cls.needs_labels, name
        assert SCHEMAS[name].needs_teacher == cls.needs_teacher, name


def test_student_families_match_the_zoo() -> None:
    assert set(FAMILIES) == set(STUDENTS)
