"""The OpenAPI document is true: Schemathesis drives every operation in-process
(its engine, all phases the CLI runs) on the test database with a real tenant's
key. Every response must be a status the document declares, with the declared
body and headers, and none may be a 5xx.

What the checks accept beyond the document is the allow-list in
tests/service/schemathesis.toml, each entry with its reason.

The run is seeded, so CI is reproducible; `STILLHOUSE_TEST_FUZZ_SEED=<n>`
explores other cases (a failure prints the seed to replay)."""

from __future__ import annotations

import os
import tomllib
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events

from core.config import Settings
from tests.conftest import new_tenant

pytestmark = pytest.mark.usefixtures("worker")

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = int(os.environ.get("STILLHOUSE_TEST_FUZZ_SEED", "20261128"))


def test_every_operation_keeps_its_contract(settings: Settings) -> None:
    from service.main import create_app

    data = tomllib.loads(CONFIG.read_text())
    data["headers"] = new_tenant(settings)
    data["seed"] = SEED
    config = SchemathesisConfig.from_dict(data)
    app = create_app(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    operations = {
        f"{m.upper()} {path}" for path, ops in app.openapi()["paths"].items() for m in ops
    }

    statuses: Counter[int] = Counter()
    answered: set[str] = set()  # operations that got at least one response
    failures: list[str] = []
    finished: events.EngineFinished | None = None
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    statuses[interaction.response.status_code] += 1
                    answered.add(str(event.label))
            for checks in event.recorder.checks.values():
                failures += [
                    f"{event.label}: {c.name}: {c.failure_info.failure if c.failure_info else ''}"
                    for c in checks
                    if c.status == Status.FAILURE
                ]
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"{type(event).__name__}: {event}")
        elif isinstance(event, events.EngineFinished):
            finished = event
    cases = sum(statuses.values())
    print(
        f"\nschemathesis (seed {SEED}): {cases} requests, by status {dict(sorted(statuses.items()))}"
    )
    assert finished is not None and cases > 500, (finished, statuses)
    assert operations - answered == set(), f"never exercised: {sorted(operations - answered)}"
    assert not [s for s in statuses if s >= 500], statuses
    assert failures == [], f"seed {SEED}:\n" + "\n".join(sorted(set(failures)))
