"""`Registry`: the name -> class mapping behind `create_model` and `create_datamodule`.

One implementation for every kind of registered class, so a name is refused, listed and built
the same way everywhere. A name is one of three things (`get`): a class registered in this
process (`register`), an entry point of the registry's group that an installed package declares
(loaded on first use, so the core never imports a plug-in it is not asked for), or an import
path `package.module:Name` (as the lightning-hydra-template's `_target_`). What a run records
is `recorded_name`: the registered name of regzoo's own classes, the import path of everyone
else's, so that a fresh interpreter (a spawned worker, `load_model`) rebuilds the same class.

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

import importlib
import inspect
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from regzoo._checks import one_line

T = TypeVar("T")
C = TypeVar("C", bound=type)


class Registry(Generic[T]):
    """Classes producing `T`, registered under unique names.

    Args:
        kind: What one entry is called in messages ("model", "dataset").
        option_noun: What a constructor keyword is called in messages ("hyperparameter").
        name_attribute: A class attribute set to the name a class is registered under.
        group: The entry-point group through which installed packages add names.
        accepts: What a class must be (the registry's kind): a message saying what is allowed
            when `cls` is not acceptable, else None. Checked on every resolved class.
    """

    def __init__(
        self,
        kind: str,
        *,
        option_noun: str = "option",
        name_attribute: str | None = None,
        group: str | None = None,
        accepts: Callable[[Any], str | None] | None = None,
    ) -> None:
        self.kind = kind
        self.option_noun = option_noun
        self.name_attribute = name_attribute
        self.group = group
        self.accepts = accepts
        self._classes: dict[str, type[T]] = {}
        self._loaded: dict[str, type[T]] = {}  # entry points and import paths, once imported

    def register(self, name: str) -> Callable[[C], C]:
        """Class decorator adding a class under `name`; a name already taken is refused."""

        def add(cls: C) -> C:
            why = self.accepts(cls) if self.accepts is not None else None
            if why is not None:
                raise ValueError(f"{self.kind} {name!r} cannot be {_what(cls)}; {why}")
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
        """Every name this process knows without importing anything: registered ones and the
        installed entry points, sorted."""
        return sorted(set(self._classes) | set(self._entry_points()))

    def sources(self) -> dict[str, str]:
        """Each name of `names()` and where it comes from: `regzoo`, the module that registered
        it, or the entry point's package and import path (nothing is imported)."""
        where = {
            name: "regzoo" if _is_regzoo(cls) else f"registered by {cls.__module__}"
            for name, cls in self._classes.items()
        }
        for name, ep in self._entry_points().items():
            where.setdefault(name, f"entry point {ep.value} ({_distribution(ep)})")
        return dict(sorted(where.items()))

    def get(self, name: str) -> type[T]:
        """The class `name` stands for: registered, an entry point, or `package.module:Name`.

        An unknown name, a path that does not import and a class of the wrong kind are each
        refused with one line saying what is allowed.
        """
        # `in` hashes its operand: an unhashable name would raise TypeError instead.
        if isinstance(name, str) and name in self._classes:
            return self._classes[name]
        if isinstance(name, str) and name in self._loaded:
            return self._loaded[name]
        if not isinstance(name, str) or (":" not in name and name not in self._entry_points()):
            raise ValueError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}, "
                f"or an import path package.module:Name"
            )
        cls = self._import(name)
        why = self.accepts(cls) if self.accepts is not None else None
        if why is not None:
            raise ValueError(f"{self.kind} {name!r} is {_what(cls)}; {why}")
        self._loaded[name] = cls
        return cls

    def _import(self, name: str) -> type[T]:
        """The object an entry point or an import path names, imported now."""
        ep = self._entry_points().get(name)
        path = ep.value if ep is not None else name
        module, _, attr = path.partition(":")
        if not module or not attr:
            raise ValueError(
                f"{self.kind} {name!r} is not an import path; allowed: package.module:Name"
            )
        try:
            obj: Any = importlib.import_module(module)
        except Exception as exc:  # anything a user's module raises on import
            raise ValueError(
                f"{self.kind} {name!r}: module {module!r} does not import "
                f"({type(exc).__name__}: {one_line(exc, lines=1)}); it must be installed or on "
                "PYTHONPATH"
            ) from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"{self.kind} {name!r}: module {module!r} has no {attr!r}")
            obj = getattr(obj, part)
        return obj

    def _entry_points(self) -> dict[str, EntryPoint]:
        """The installed packages' entry points of this registry's group, by name."""
        if self.group is None:
            return {}
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def recorded_name(self, cls: type) -> str:
        """What a run records for `cls`: regzoo's registered name for regzoo's own classes, the
        import path `module:QualName` for anyone else's (found again in a fresh interpreter)."""
        if _is_regzoo(cls):
            for name, registered in self._classes.items():
                if registered is cls:
                    return name
        return import_path(cls)

    def trusts(self, name: str) -> bool:
        """Whether importing the recorded `name` runs only code installed or registered for this
        registry: a registered name, an entry point's name or its import path, or the import
        path of a registered class. Decided without importing anything."""
        if name in self._classes or name in self._entry_points():
            return True
        registered = {import_path(cls) for cls in self._classes.values()}
        return name in registered or name in {ep.value for ep in self._entry_points().values()}

    def options(self, name: str) -> dict[str, inspect.Parameter]:
        """Every keyword `create(name, ...)` accepts, with its default, base classes' included."""
        return class_options(self.get(name))

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


def class_options(cls: type) -> dict[str, inspect.Parameter]:
    """Every keyword `cls(...)` accepts, with its default, base classes' included.

    A subclass passes its base's arguments on with `**kwargs`, so the signature of its own
    `__init__` alone would hide them: the `__init__`s along the MRO are read as far as each
    passes `**kwargs` on (one without them ends the chain: its bases' arguments are not its
    own). A class that sets `__signature__` on its `__init__` says its own.
    """
    chain: list[list[inspect.Parameter]] = []
    for klass in cls.__mro__[:-1]:  # not object's
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())
        chain.append([p for p in params if p.name != "self" and p.kind not in VARIADIC])
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return {p.name: p for own in reversed(chain) for p in own}


VARIADIC = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)


def import_path(obj: Any) -> str:
    """`package.module:QualName` of a class or function: what `Registry.get` imports again."""
    return f"{obj.__module__}:{obj.__qualname__}"


def _is_regzoo(cls: type) -> bool:
    return cls.__module__ == "regzoo" or cls.__module__.startswith("regzoo.")


def _what(obj: Any) -> str:
    if isinstance(obj, type):
        bases = ", ".join(b.__name__ for b in obj.__mro__[1:-1]) or "object"
        return f"the class {obj.__qualname__} (a subclass of {bases})"
    return f"a {type(obj).__name__}, not a class"


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"package {dist.name}" if dist is not None else "an installed package"
