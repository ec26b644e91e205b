"""Log lines for machines and for people: one JSON object per line when the log stream
is not a terminal (a container, a file, a log shipper), readable text when it is;
`STILLHOUSE_LOG_FORMAT=json|text` forces either.

Every line carries the fields of the work in hand. A worker's task binds them
(`bind`: its task name, and the job id and stage, or the model, dataset or predict
request it works on) for as long as it runs; the worker's id and pool are bound once
for the whole process (`bind_process`), so the heartbeat thread's lines carry them too.
A logging Filter on the one handler copies them onto each record, whichever library
logged it. The gateway and the worker share this through `dict_config`, the
`logging.config.dictConfig` document that uvicorn's `log_config` also takes.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Literal, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["auto", "json", "text"]

# The context fields a line may carry, in the order the text format shows them.
FIELDS = ("task", "job_id", "stage", "model_id", "dataset_id", "request_id", "worker", "pool")

_NONE: Mapping[str, str] = MappingProxyType({})
_bound: ContextVar[Mapping[str, str]] = ContextVar("stillhouse_log_fields", default=_NONE)
# Fields of the whole process: a thread started by the worker (the heartbeat) begins with
# an empty context, so what is true of every line the process writes is kept here instead.
_process: dict[str, str] = {}


@contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add `fields` (None values left out) to every line logged inside the block."""
    unknown = set(fields) - set(FIELDS)
    assert not unknown, f"not log fields: {sorted(unknown)}; add them to FIELDS"
    added = {name: str(value) for name, value in fields.items() if value is not None}
    token = _bound.set({**_bound.get(), **added})
    try:
        yield
    finally:
        _bound.reset(token)


def bind_process(**fields: str) -> None:
    """Fields every line of this process carries (a worker's id and pool)."""
    _process.update(fields)


def bound() -> dict[str, str]:
    """The fields a line logged here and now would carry."""
    return {**_process, **_bound.get()}


class ContextFilter(logging.Filter):
    """Copies the bound fields onto every record that reaches the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in bound().items():
            setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """`12:00:01 INFO stillhouse.worker: message  job_id=... stage=...`: for a terminal.
    The process-wide fields (worker id, pool) are left out: one terminal, one worker."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        shown = [
            f"{name}={getattr(record, name)}"
            for name in FIELDS
            if name not in _process and hasattr(record, name)
        ]
        if not shown:
            return line
        head, newline, trace = line.partition("\n")  # keep a traceback below the fields
        return f"{head}  {' '.join(shown)}{newline}{trace}"


# uvicorn puts an ANSI-coloured copy of some messages in `color_message`; the JSON lines
# carry the plain one.
_SKIPPED = [*RESERVED_ATTRS, "color_message"]


def json_formatter() -> logging.Formatter:
    """`{"time", "level", "logger", "message", ...the bound fields, ...extra=}`; an
    exception adds `exc_info` (the traceback as one string)."""
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        reserved_attrs=_SKIPPED,
        timestamp="time",  # ISO 8601 in UTC
        json_ensure_ascii=False,  # a sentence with "é" or "…" stays readable in the file
    )


def resolve_format(fmt: LogFormat, stream: TextIO | None = None) -> Literal["json", "text"]:
    if fmt != "auto":
        return fmt
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def make_formatter(fmt: LogFormat = "auto") -> logging.Formatter:
    """The formatter for `fmt` (dictConfig's `()` factory for the handler below)."""
    return json_formatter() if resolve_format(fmt) == "json" else TextFormatter()


def dict_config(level: str | int, fmt: LogFormat = "auto") -> dict[str, Any]:
    """One handler on the root logger, writing to stderr through the context filter;
    every library's logger (celery, uvicorn, ours) propagates to it. Existing loggers are
    kept: ours are created at import time, before this runs."""
    level_name = logging.getLevelName(level) if isinstance(level, int) else level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"stillhouse": {"()": make_formatter, "fmt": fmt}},
        "handlers": {
            "stillhouse": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "stillhouse",
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["stillhouse"], "level": level_name},
        # uvicorn's own loggers: no handlers of their own, so their lines reach the root's.
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def adopt(library: str) -> None:
    """Send a library's lines through our handler when it logs through its own and stops
    them from propagating (torch does, at import): they become our lines, fields and all.
    Its loggers keep their levels."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and (name + ".").startswith(library + "."):
            for handler in logger.handlers[:]:
                logger.removeHandler(handler)
            logger.propagate = True


def configure(level: str | int, fmt: LogFormat = "auto") -> None:
    """Set up this process's logging (the worker; the gateway goes through uvicorn's
    `log_config`). Python warnings become log lines too, so none breaks the JSON lines."""
    logging.config.dictConfig(dict_config(level, fmt))
    logging.captureWarnings(True)
