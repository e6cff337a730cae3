"""A package's public names imported when first used (PEP 562), not with the package.

The engine's helper processes (`copy_helper`, `scan_walk`, the verification's walk helpers)
import only the modules they run: a name a package re-exports from a module they never use
(the engine, the S3 settings and ``configparser``) would otherwise be loaded into each of
them with the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping


def lazy_exports(
    package: str, namespace: MutableMapping[str, object], exports: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of the package ``package``, whose globals are
    ``namespace``: each name of ``exports`` is taken from its module (relative to the
    package) when first looked up, then kept in ``namespace``."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value  # (looked up once)
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
