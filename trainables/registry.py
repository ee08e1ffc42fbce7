"""One small registry helper for the project's named things (generators, model sets, arms, search
spaces, presets), as in timm and smp: a decorator registers an object under a name with a few
metadata fields; an unknown name raises a KeyError that lists the valid ones.

Torch-free on purpose: the command line lists arms and validates names at parse time, in well under
a second, without importing torch (see ``lazy_module``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object and its metadata."""

    name: str
    obj: T
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> object, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "generator", "model set", ... (used in error messages)
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: register the decorated object as ``name`` with ``meta``.

        Raises:
            ValueError: ``name`` is already registered.
        """

        def decorate(obj: T) -> T:
            self.add(name, obj, **meta)
            return obj

        return decorate

    def add(self, name: str, obj: T, **meta: Any) -> None:
        """Register ``obj`` as ``name`` (the non-decorator form)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(name, obj, dict(meta))

    def entry(self, name: str) -> Entry[T]:
        """The entry of ``name``.

        Raises:
            KeyError: unknown name; the message lists the valid ones.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(self._entries) or '(none)'}"
            ) from None

    def get(self, name: str) -> T:
        """The object registered as ``name`` (KeyError listing the valid names)."""
        return self.entry(name).obj

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(list(self._entries.values()))


class _LazyModule(ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._target = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._target), attr)


def lazy_module(name: str) -> ModuleType:
    """A stand-in for module ``name`` that imports it on first attribute access.

    Registry modules use it for their torch-heavy implementations, so that importing a registry
    (to list or validate names) stays cheap while calling an entry works as usual.
    """
    return _LazyModule(name)
