"""Modules a command group needs only when one of its commands runs.

`dataspace --help` or `dataspace ledger verify` should not pay for importing every service
(SQL parsing, the sandbox, multi-party protocols, pyarrow, numpy: over a second in all). A
command module names its services with :func:`lazy_module` under ``if not TYPE_CHECKING``
(mypy still sees the real import); the service is imported when the command first reads one
of its attributes.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _Deferred(ModuleType):
    """Stands in for a module inside the CLI only: the stand-in is not put in ``sys.modules``,
    so the rest of the process (a server started by `dataspace serve`, its request threads)
    imports and shares the real module; the import system's locks make a first use from two
    threads safe. Every attribute is read from the real module, so a test that patches a
    service patches the real module (``dataspace.services.X``), never the stand-in."""

    def __getattr__(self, attr: str) -> Any:  # only for names the stand-in does not have
        module = self.__dict__.get("_module")
        if module is None:
            module = self.__dict__["_module"] = importlib.import_module(self.__name__)
        return getattr(module, attr)


def lazy_module(name: str) -> ModuleType:
    """A stand-in for module ``name`` that imports it on first attribute access."""
    return _Deferred(name)
