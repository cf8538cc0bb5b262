"""`Registry`: the name -> class mapping behind `create_model` and `create_datamodule`.

One implementation for every kind of registered class, so a name is refused, listed and built
the same way everywhere:

    >>> from regzoo._registry import Registry
    >>> shapes: Registry[object] = Registry("shape", option_noun="option")
    >>> @shapes.register("square")
    ... class Square:
    ...     def __init__(self, side: float = 1.0) -> None:
    ...         self.side = side
    >>> shapes.names()
    ['square']
    >>> shapes.create("square", side=2.0).side
    2.0
    >>> shapes.create("square", sides=2.0)
    Traceback (most recent call last):
    ...
    ValueError: shape 'square' got unknown option(s) sides; accepted: side
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
C = TypeVar("C", bound=type)


class Registry(Generic[T]):
    """Classes producing `T`, registered under unique names.

    Args:
        kind: What one entry is called in messages ("model", "dataset").
        option_noun: What a constructor keyword is called in messages ("hyperparameter").
        name_attribute: A class attribute set to the name a class is registered under.
    """

    def __init__(
        self, kind: str, *, option_noun: str = "option", name_attribute: str | None = None
    ) -> None:
        self.kind = kind
        self.option_noun = option_noun
        self.name_attribute = name_attribute
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[C], C]:
        """Class decorator adding a class under `name`; a name already taken is refused."""

        def add(cls: C) -> C:
            if name in self._classes:
                raise ValueError(
                    f"{self.kind} name {name!r} is already registered by {self._classes[name]!r}"
                )
            self._classes[name] = cls
            if self.name_attribute is not None:
                setattr(cls, self.name_attribute, name)
            return cls

        return add

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        """The class registered as `name`; an unknown name is refused with the available ones."""
        # `in` hashes its operand: an unhashable name would raise TypeError instead.
        if not isinstance(name, str) or name not in self._classes:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._classes[name]

    def options(self, name: str) -> dict[str, inspect.Parameter]:
        """Every keyword `create(name, ...)` accepts, with its default, base classes' included.

        A subclass passes its base's arguments on with `**kwargs`, so the signature of its own
        `__init__` alone would hide them: every `__init__` along the MRO is read.
        """
        params: dict[str, inspect.Parameter] = {}
        for klass in reversed(self.get(name).__mro__):
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    params[p.name] = p
        return params

    def check_options(self, name: str, options: dict[str, Any]) -> None:
        """Refuse keywords `name`'s class does not accept, listing the ones it does."""
        accepted = self.options(name)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(
                f"{self.kind} {name!r} got unknown {self.option_noun}(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(accepted))}"
            )

    def create(self, name: str, **options: Any) -> T:
        """An instance of the class registered as `name`, built with `options`."""
        self.check_options(name, options)
        return self.get(name)(**options)
