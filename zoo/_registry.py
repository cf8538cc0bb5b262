"""The model registry: one name per model, one vocabulary of constructor arguments.

A model name is a registered name (`register_model`), an entry point of group `regzoo.models`
that an installed package declares, or an import path `package.module:Class`; the class may be
a zoo-style `Classifier`, a plain `torch.nn.Module` (wrapped, `zoo._user`) or a LightningModule
of the user's own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import lightning as L
from torch import nn

from regzoo._registry import Registry, class_options
from regzoo.zoo._hparams import plain_hparam
from regzoo.zoo._user import is_foreign, kind_refusal, trainable
from regzoo.zoo.classifier import Classifier

MODELS: Registry[nn.Module] = Registry(
    "model",
    option_noun="hyperparameter",
    name_attribute="model_name",
    group="regzoo.models",
    accepts=kind_refusal,
)
C = TypeVar("C", bound=type[nn.Module])


def register_model(name: str) -> Callable[[C], C]:
    """Class decorator that adds a model class (a `Classifier`, a plain `nn.Module` or a
    LightningModule) to the registry under `name`, in this process. Spawned workers and
    `load_model` in another process find it by its import path, which is what runs record."""
    return MODELS.register(name)


def list_models() -> list[str]:
    """Registered names and installed entry points accepted by `create_model`, sorted."""
    return MODELS.names()


def model_sources() -> dict[str, str]:
    """Each name of `list_models()` and where it comes from (regzoo, a module, an entry point)."""
    return MODELS.sources()


def model_class(name: str) -> type[L.LightningModule]:
    """The class `create_model(name)` builds (a plain module's wrapper); an unknown name, a
    path that does not import or a class of the wrong kind is refused in one line."""
    cls = MODELS.get(name)
    return trainable(cls, name, MODELS.recorded_name(cls))


def is_foreign_model(name: str) -> bool:
    """Whether `name` is a LightningModule of the user's own, trained as it is."""
    return is_foreign(model_class(name))


def model_hparams(name: str) -> dict[str, inspect.Parameter]:
    """Every keyword `create_model(name, ...)` accepts, with its default, base class included."""
    return class_options(model_class(name))


def trusted_model(name: str) -> bool:
    """Whether loading a file that records `name` may import it without `trust_code`: a
    registered or entry-point name, or the import path of one (decided without importing)."""
    return MODELS.trusts(name)


def check_trusted(name: str, *, where: str, trust_code: bool) -> None:
    """Refuse, before anything is imported, a recorded import path that nobody registered:
    a checkpoint or a saved folder must not become a way to run code (as Hugging Face's
    `trust_remote_code`). A zoo name, an entry point and `register_model`'s classes pass."""
    if trust_code or ":" not in name or trusted_model(name):
        return
    raise ValueError(
        f"{where} names the model {name!r}, an import path that is not registered (an entry "
        "point of group 'regzoo.models' or register_model): importing it would run its code; "
        "pass trust_code=True to load it anyway"
    )


def create_model(name: str, **hparams: Any) -> Classifier:
    """Build a model: `create_model("cnn", input_shape=(1, 8, 8), num_classes=10)`, or a user's
    class by import path, `create_model("mypkg.nets:Net", input_shape=(16,), num_classes=3)`
    (a plain `nn.Module` comes back wrapped into a Classifier).

    Unknown hyperparameters are refused with the list of accepted ones; a LightningModule of
    the user's own is refused (it is not a Classifier: `build_model` builds it).
    """
    model = build_model(name, **hparams)
    if not isinstance(model, Classifier):
        raise ValueError(
            f"model {name!r} is a LightningModule of its own, not a regzoo Classifier: studies "
            "train it as it is, but loading and export need a Classifier or a plain nn.Module"
        )
    return model


def build_model(name: str, **hparams: Any) -> L.LightningModule:
    """`create_model` for any model class, a user's own LightningModule included (built with
    its own constructor's keywords)."""
    cls = model_class(name)
    accepted = class_options(cls)
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(
            f"model {name!r} got unknown hyperparameter(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    return cls(**{k: plain_hparam(k, v) for k, v in hparams.items()})
