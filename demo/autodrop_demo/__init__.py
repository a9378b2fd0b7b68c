"""autodrop_demo: the ``autodrop demo`` and ``autodrop bench`` commands.

``autodrop demo`` trains a small 1-D CNN on MNIST-1D with the torch adapter and plots
AutoDrop's decisions; ``autodrop bench`` compares AutoDrop with the lr schedules people
use today on two small tasks. This package is an application of the adapters: it must
not implement any part of AutoDrop itself.
"""

from __future__ import annotations

from autodrop_demo._data import Split, load_digits_split, load_mnist1d
from autodrop_demo._models import Cnn1d, Mlp

__all__ = ["Cnn1d", "Mlp", "Split", "load_digits_split", "load_mnist1d"]
