"""The log formats and the context fields (core.logs), on a handler of their own."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest

from core import logs


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own, writing through the context filter into a string."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs.ContextFilter())
    log = logging.getLogger(f"test.logs.{id(out)}")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    saved = dict(logs._process)
    yield log, out
    logs._process.clear()
    logs._process.update(saved)


def _json(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_bound_fields_reach_the_lines_inside_the_block_only(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logger
    log.handlers[0].setFormatter(logs.json_formatter())
    logs.bind_process(worker="host/cpu/cpu/7", pool="cpu")
    with logs.bind(task="stillhouse.run_stage", job_id="j1", stage="training"):
        log.info("epoch %d", 3, extra={"color_message": "\x1b[1mepoch 3\x1b[0m"})
        with logs.bind(stage="export", model_id=None):  # nested: overrides, None left out
            log.warning("inner")
        try:
            raise ValueError("bad input")
        except ValueError:
            log.exception("failed")
    log.info("après")
    first, inner, failed, after = _json(out)
    assert '"message": "après"' in out.getvalue()  # UTF-8 as is, not \u escapes

    assert first["message"] == "epoch 3" and first["level"] == "INFO"
    assert first["logger"] == log.name and first["time"].endswith("+00:00")
    assert {k: first[k] for k in ("task", "job_id", "stage", "worker", "pool")} == {
        "task": "stillhouse.run_stage",
        "job_id": "j1",
        "stage": "training",
        "worker": "host/cpu/cpu/7",
        "pool": "cpu",
    }
    assert "color_message" not in first and "model_id" not in inner
    assert (inner["stage"], inner["job_id"]) == ("export", "j1")
    assert failed["stage"] == "training" and "ValueError: bad input" in failed["exc_info"]
    # Outside every block: the process's fields alone.
    assert {k for k in after if k in logs.FIELDS} == {"worker", "pool"}


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(AssertionError, match="jobid"), logs.bind(jobid="j1"):
        pass


def test_text_lines_show_the_task_fields_but_not_the_process_ones(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = logger
    log.handlers[0].setFormatter(logs.TextFormatter())
    logs.bind_process(worker="host/cpu/cpu/7", pool="cpu")
    with logs.bind(job_id="j1", stage="training"):
        try:
            raise ValueError("bad input")
        except ValueError:
            log.exception("failed")
    log.info("plain")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(f" ERROR {log.name}: failed  job_id=j1 stage=training"), lines[0]
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1].endswith(f" INFO {log.name}: plain"), lines[-1]
    assert not any("host/cpu" in line for line in lines)


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    assert logs.resolve_format("auto", Tty()) == "text"
    assert logs.resolve_format("auto", io.StringIO()) == "json"
    assert logs.resolve_format("json", Tty()) == "json"
    assert logs.resolve_format("text", io.StringIO()) == "text"
    assert isinstance(logs.make_formatter("text"), logs.TextFormatter)


def test_the_dict_config_routes_every_logger_through_one_json_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logging.config.dictConfig(logs.dict_config("info", "json"))
        with logs.bind(request_id="r1"):
            logging.getLogger("uvicorn.error").info("Started server process")
            logging.getLogger("stillhouse.api").debug("below the level")
    finally:
        root.handlers[:], root.level = saved
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["logger"], line["message"], line["request_id"]) for line in lines] == [
        ("uvicorn.error", "Started server process", "r1")
    ]


def test_a_library_with_handlers_of_its_own_is_adopted() -> None:
    """torch logs through its own handler and stops propagation; adopted, its lines reach
    the root's handler (ours), at the levels it chose."""
    own = logging.StreamHandler(io.StringIO())
    library, child, other = (logging.getLogger(n) for n in ("fakelib", "fakelib.sub", "fakelibx"))
    for logger in (library, other):
        logger.addHandler(own)
        logger.propagate = False
    library.setLevel(logging.WARNING)
    logs.adopt("fakelib")
    assert (library.handlers, library.propagate, child.propagate) == ([], True, True)
    assert library.level == logging.WARNING
    assert (other.handlers, other.propagate) == ([own], False)  # a name that only starts alike
