"""Build the ONNX exporter's op registry once per process instead of once per export.

`torch.onnx.export(..., dynamo=True)` rebuilds its registry of ATen-to-ONNX functions on
every call: onnxscript parses the source of ~500 torchlib functions and torch derives a
signature for each. For the small students here that is most of an export: 1.3 s of a
1.6 s export on an idle core, 3-5 s under load, twice per job (student and baseline).

The registry is only read during an export (torch 2.5-2.13), so each call gets a copy of
one built registry: the function lists are copied, so a `custom_translation_table` that
registers an op on its copy never reaches the next export. This leans on a private torch
module; when that module or its attributes change, `install` leaves the exporter as it is
(slower, still correct).
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

log = logging.getLogger(__name__)


@functools.cache
def install() -> bool:
    """Make `ONNXRegistry.from_torchlib` hand out copies of one registry per opset version.
    Idempotent; False (and nothing changed) where torch's exporter is laid out differently."""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return False
    registry_class = getattr(_registration, "ONNXRegistry", None)
    build = getattr(registry_class, "from_torchlib", None)
    if registry_class is None or build is None or not hasattr(registry_class(), "functions"):
        log.debug("torch's ONNX registry has changed shape; exports rebuild it each time")
        return False
    built: dict[tuple[type, Any], Any] = {}

    def from_torchlib(cls: type, *args: Any, **kwargs: Any) -> Any:
        key = (cls, (args, tuple(sorted(kwargs.items()))))
        if key not in built:
            built[key] = build.__func__(cls, *args, **kwargs)
        fresh = copy.copy(built[key])
        fresh.functions = {target: list(metas) for target, metas in built[key].functions.items()}
        return fresh

    from_torchlib.__wrapped__ = build  # type: ignore[attr-defined]  # the uncached builder
    registry_class.from_torchlib = classmethod(from_torchlib)
    return True
