"""Name -> class registries, one per extension point.

The config value is the registered name (by default the class name), so an SGB config that says
``PREDICTOR: "MotifPredictor"`` finds the class registered under that name.
"""
from __future__ import annotations

import difflib
from typing import Callable, Dict, Iterator, Optional, Tuple, TypeVar

T = TypeVar("T")


class Registry:
    """A named mapping from strings to classes or factory functions.

    >>> BACKBONES = Registry("BACKBONE")
    >>> @BACKBONES.register()
    ... class MyNet: ...
    >>> BACKBONES.get("MyNet") is MyNet
    True
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._items: Dict[str, object] = {}

    def register(self, obj: Optional[T] = None, name: Optional[str] = None):
        """Register ``obj`` under ``name`` (default ``obj.__name__``); works as a decorator."""

        def _do(o: T) -> T:
            key = name or o.__name__
            if key in self._items and self._items[key] is not o:
                raise KeyError(f"{self.name} registry: '{key}' is already registered to {self._items[key]!r}")
            self._items[key] = o
            return o

        if obj is None:
            return _do
        return _do(obj)

    def get(self, name: str):
        if name not in self._items:
            known = sorted(self._items)
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(
                f"'{name}' is not registered in the {self.name} registry. Known: {', '.join(known) or '(none)'}.{hint}"
            )
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[Tuple[str, object]]:
        return iter(sorted(self._items.items()))

    def __len__(self) -> int:
        return len(self._items)

    def names(self):
        return sorted(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {self.names()})"
