"""The README example's files without its teacher: the job.yaml that examples/digits_kd.py
writes is valid YAML, is the spec it was built from, and (ids filled in) a job the API
accepts; the data split gives the job few labels and a transfer set, each image once."""

from __future__ import annotations

import uuid

import numpy as np
import yaml

from core.spec import JobCreate
from examples.digits_kd import PLACEHOLDERS, digit_images, job_spec, split_labels, to_yaml


def test_job_yaml_is_the_spec_and_a_valid_job() -> None:
    spec = yaml.safe_load(to_yaml(job_spec(seed=3)))
    assert spec == job_spec(seed=3)
    assert {field: spec[field] for field in PLACEHOLDERS} == PLACEHOLDERS
    filled = {**spec, **{field: str(uuid.uuid4()) for field in PLACEHOLDERS}}
    job = JobCreate.model_validate(filled)
    assert job.baseline and job.training.seed == 3
    assert [term.name for term in job.losses] == ["kd", "ce"]


def test_to_yaml_reads_back_nested_values() -> None:
    value = {"a": [1, 2], "b": {"c": None, "d": [{"e": "x: y"}, {"f": True}]}, "g": []}
    assert yaml.safe_load(to_yaml(value)) == value


def test_split_gives_few_labels_and_disjoint_sets() -> None:
    (x, y), (x_val, y_val) = digit_images()
    (x_labeled, y_labeled), x_transfer = split_labels(x, y)
    assert x.shape[1:] == (1, 8, 8) and x.dtype == np.float32
    assert (len(x_labeled), len(x_transfer), len(x_val)) == (143, 1294, 360)
    assert set(np.unique(y_labeled)) == set(range(10))  # every class has a label
    assert len(x) + len(x_val) == 1797  # scikit-learn's digits, each once
    (index_labeled, _), index_transfer = split_labels(np.arange(len(x)), y)
    together = np.concatenate([index_labeled, index_transfer])
    assert np.array_equal(np.sort(together), np.arange(len(x)))  # disjoint, and covering
