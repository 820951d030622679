"""A tiny name -> factory registry with stable names and "did you mean" errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from headstart.errors import ConfigError, did_you_mean, format_choices

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps stable, user-facing names (as written in configs) to factories."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str, where: str = "") -> T:
        if name not in self._items:
            loc = f" (at {where})" if where else ""
            raise ConfigError(
                f"Unknown {self.kind} '{name}'{loc}.{did_you_mean(name, self._items)} "
                f"Valid names: {format_choices(sorted(self._items))}."
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
