"""The networks of the demo and the benchmark: 1-D CNNs and MLPs, with or without BatchNorm.

All are small on purpose (2.5k to 90k parameters), so that a benchmark of a hundred
runs fits in about half an hour on two CPU cores. This module only defines architectures; it must not train, seed or
touch any random state itself (the caller builds models inside a seeded scope).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Cnn1d", "Cnn1dBn", "Mlp", "MlpBn"]


class Cnn1d(nn.Module):
    """A 1-D CNN for MNIST-1D signals of shape ``(batch, length)``.

    Three strided convolutions with ReLU, then a linear classifier over the flattened
    feature map, in the spirit of the CNN baseline of the MNIST-1D paper.

    Args:
        length: length of each input signal (40 for MNIST-1D).
        channels: feature maps per convolution.
        classes: number of output classes.
    """

    def __init__(self, length: int = 40, channels: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, kernel_size=5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
        )
        with torch.no_grad():
            width = self.features(torch.zeros(1, 1, length)).shape[-1]
        self.classifier = nn.Linear(channels * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, classes)``."""
        return self.classifier(self.features(x.unsqueeze(1)).flatten(1))


class Mlp(nn.Module):
    """A two-hidden-layer perceptron for flat inputs (the 64 pixels of a digit).

    Args:
        inputs: input features.
        hidden: units of each hidden layer.
        classes: number of output classes.
    """

    def __init__(self, inputs: int = 64, hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, classes)``."""
        return self.net(x)


class MlpBn(nn.Module):
    """A two-hidden-layer perceptron with BatchNorm (the hidden linear layers have no bias).

    Args:
        inputs: input features.
        hidden: units of each hidden layer.
        classes: number of output classes.
    """

    def __init__(self, inputs: int = 40, hidden: int = 256, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(inputs, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, classes)``."""
        return self.net(x)


class Cnn1dBn(nn.Module):
    """A 1-D CNN with BatchNorm for signals of shape ``(batch, length)``.

    Two strided convolutions (BatchNorm, ReLU), then a hidden dense layer with
    BatchNorm and a linear classifier.

    Args:
        length: length of each input signal (40 for MNIST-1D).
        channels: feature maps per convolution.
        hidden: units of the dense layer.
        classes: number of output classes.
    """

    def __init__(self, length: int = 40, channels: int = 32, hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, kernel_size=5, stride=2, padding=2, bias=False), nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm1d(channels), nn.ReLU(),
        )
        with torch.no_grad():
            width = self.features(torch.zeros(2, 1, length)).shape[-1]
        self.head = nn.Sequential(
            nn.Linear(channels * width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, classes)``."""
        return self.head(self.features(x.unsqueeze(1)).flatten(1))
