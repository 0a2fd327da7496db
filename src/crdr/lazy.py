"""Package attributes imported on first use (PEP 562), so ``import crdr`` stays torch-free.

Why: the CLI's help, version and ``info`` must start without torch (0.2 s instead of seconds),
yet ``crdr.compress`` and ``crdr.evaluate.evaluate`` should work as plain attributes. A package
lists its public names with the module defining each; :func:`lazy_attributes` gives it the
``__getattr__`` and ``__dir__`` that import that module when a name is first read.
"""

from __future__ import annotations

import importlib
from typing import Callable, Mapping, Sequence


def lazy_attributes(
    package: str, names: Mapping[str, str], public: Sequence[str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps an attribute to its module."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        namespace[name] = value  # later reads skip this hook
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__
