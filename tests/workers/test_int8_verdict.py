"""When the int8 variant is kept, and the sentence the report gives when it is not."""

from __future__ import annotations

from workers.stages.export import int8_verdict


def test_a_variant_within_the_limit_is_kept() -> None:
    assert int8_verdict({"accuracy": 0.96}, {"accuracy": 0.95}, 0.02) is None
    assert int8_verdict({"accuracy": 0.96}, {"accuracy": 0.97}, 0.0) is None  # a gain is no loss


def test_a_variant_past_the_limit_is_refused_with_the_figures() -> None:
    note = int8_verdict({"accuracy": 0.961}, {"accuracy": 0.9}, 0.02)
    assert note is not None
    assert "loses 6.1 points" in note and "96.1% to 90.0%" in note
    assert "limit of 2.0" in note and "not offered for download" in note


def test_without_labels_there_is_no_accuracy_to_lose() -> None:
    assert int8_verdict({"agreement": 0.9}, {"agreement": 0.5}, 0.0) is None
