"""A user's model class, made trainable by regzoo: what each kind of class becomes.

- A `Classifier` subclass is used as it is, as the zoo's own models are.
- A plain `torch.nn.Module` class is wrapped into a `Classifier` (`wrap_module`), so that every
  course knob applies to it (optimizers, schedules, L1/L2, decoupled decay, init, gradient
  clipping, the input normalization saved inside the model). Its constructor's `input_shape`
  and `num_classes`, where it declares them, come from the data; its other keyword arguments
  are the wrapper's hyperparameters beside the Classifier's own.
- Any other `LightningModule` trains as it is (`is_foreign`): its own steps, optimizers and
  validation loop.

Whatever the kind, a run records the class by `model_name`: the registered name of regzoo's
models, the import path `package.module:Class` of anyone else's.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

import lightning as L
from torch import nn

from regzoo._registry import class_options, import_path
from regzoo.zoo.classifier import Classifier

# What the wrapper passes a network from the data, where its constructor declares them.
DATA_ARGS = ("input_shape", "num_classes")


def kind_refusal(obj: Any) -> str | None:
    """Why `obj` cannot be a model (one line saying what can), or None when it can."""
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        return None
    return "allowed: a torch.nn.Module, LightningModule or regzoo Classifier class"


def is_foreign(cls: type) -> bool:
    """A LightningModule of the user's own, trained as it is (not a Classifier)."""
    return issubclass(cls, L.LightningModule) and not issubclass(cls, Classifier)


def trainable(cls: type[nn.Module], name: str, recorded: str) -> type[L.LightningModule]:
    """The class regzoo builds for model class `cls` (`name` as the config gives it): a
    Classifier (recorded as `recorded`) or a foreign LightningModule as it is, a plain module
    wrapped once."""
    if issubclass(cls, Classifier):
        cls.model_name = recorded  # a user's subclass of a zoo model records its own path
    if issubclass(cls, L.LightningModule):
        return cls
    return wrap_module(cls, name)


class ModuleClassifier(Classifier):
    """A `Classifier` whose network is a plain `nn.Module` class of the user's.

    `wrap_module` makes one subclass per network class, with `network_class` set and an
    `__init__` whose signature lists the network's own arguments (what `create_model` checks
    a config's keys against).
    """

    network_class: ClassVar[type[nn.Module]]
    network_args: ClassVar[tuple[str, ...]] = ()

    def __init__(self, input_shape: Sequence[int], num_classes: int, **options: Any) -> None:
        network = {k: options.pop(k) for k in self.network_args if k in options}
        # Classifier saves its own arguments as hparams; the network's join them in
        # build_network, which Classifier calls after saving them (no zero-argument super():
        # Lightning would read this frame's `**options` as hparams too, unpopped).
        self.__dict__["_network_options"] = network
        Classifier.__init__(self, input_shape, num_classes, **options)

    def build_network(self) -> nn.Module:
        options = self.__dict__.pop("_network_options")
        self.hparams.update(options)
        declared = class_options(self.network_class)
        facts = {"input_shape": tuple(self.input_shape), "num_classes": self.hp.num_classes}
        return self.network_class(**{k: v for k, v in facts.items() if k in declared}, **options)


_WRAPPED: dict[type[nn.Module], type[ModuleClassifier]] = {}


def wrap_module(network: type[nn.Module], name: str) -> type[ModuleClassifier]:
    """The `ModuleClassifier` subclass of `network` (one per class, so members of a population
    are of one type). A network argument that is also a Classifier option is refused."""
    if network in _WRAPPED:
        return _WRAPPED[network]
    own = class_options(network)
    clash = sorted((set(own) & set(class_options(Classifier))) - set(DATA_ARGS))
    if clash:
        raise ValueError(
            f"model {name!r}: its argument(s) {', '.join(clash)} are also regzoo's training "
            "options (which the wrapper applies itself); rename them in its constructor"
        )
    args = tuple(k for k in own if k not in DATA_ARGS)

    def __init__(self: ModuleClassifier, *args: Any, **options: Any) -> None:
        ModuleClassifier.__init__(self, *args, **options)

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [own[k].replace(kind=inspect.Parameter.KEYWORD_ONLY) for k in args]
    params.append(inspect.Parameter("options", inspect.Parameter.VAR_KEYWORD))  # Classifier's
    __init__.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapped = type(
        network.__name__,
        (ModuleClassifier,),
        {
            "__init__": __init__,
            "__module__": __name__,
            "__doc__": f"{import_path(network)} as a regzoo Classifier.",
            "network_class": network,
            "network_args": args,
            "model_name": import_path(network),
        },
    )
    _WRAPPED[network] = wrapped
    return wrapped
