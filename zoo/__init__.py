"""regzoo's model zoo: LightningModules for the course's networks, built by name.

from regzoo.zoo import create_model, list_models, load_model
model = create_model("cnn", input_shape=(1, 8, 8), num_classes=10, dropout=0.2)

A model name is a registered name, an entry point of group `regzoo.models`, or a user's class by
import path (`mypkg.nets:Net`): a plain `nn.Module` comes back wrapped into a `Classifier`.
"""

from regzoo.zoo import (
    cnn,  # noqa: F401  (registers the model)
    fnn,  # noqa: F401  (registers the model)
    linear,  # noqa: F401  (registers the model)
    rnn,  # noqa: F401  (registers the model)
)
from regzoo.zoo._load import load_model
from regzoo.zoo._registry import (
    build_model,
    create_model,
    is_foreign_model,
    list_models,
    model_class,
    model_hparams,
    model_sources,
    register_model,
)
from regzoo.zoo.classifier import Classifier
from regzoo.zoo.hub import from_pretrained, save_pretrained
from regzoo.zoo.population import Population

__all__ = [
    "Classifier",
    "Population",
    "build_model",
    "create_model",
    "from_pretrained",
    "is_foreign_model",
    "list_models",
    "load_model",
    "model_class",
    "model_hparams",
    "model_sources",
    "register_model",
    "save_pretrained",
]
