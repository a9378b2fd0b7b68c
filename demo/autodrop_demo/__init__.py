"""autodrop_demo: the ``autodrop demo`` and ``autodrop bench`` commands.

``autodrop demo`` trains an MLP on MNIST-1D with the torch adapter beside a constant lr
and a step schedule, and plots AutoDrop's decisions; ``autodrop bench`` compares AutoDrop
with the lr schedules people use today on three tasks that need lr drops and two small
ones that do not. This package is an application of the adapters: it must
not implement any part of AutoDrop itself.
"""

from __future__ import annotations

from autodrop_demo._data import Split, load_digits_augmented, load_digits_split, load_mnist1d
from autodrop_demo._models import Cnn1d, Cnn1dBn, Mlp, MlpBn

__all__ = ["Cnn1d", "Cnn1dBn", "Mlp", "MlpBn", "Split", "load_digits_augmented", "load_digits_split", "load_mnist1d"]
