"""Model families for bench/fingerprint.py, built in code with seeded weights (no download).

Each factory returns `(module, example_inputs)`, the form `modelparity run module:factory`
takes, so the same weights run on PyTorch and, exported to ONNX, everywhere else.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def mlp() -> tuple[nn.Module, dict[str, np.ndarray]]:
    """Tabular classifier: 32 -> 128 -> 128 -> 10, softmax."""
    _seeded(1)
    model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 10), nn.Softmax(dim=-1))
    return model.eval(), {"x": np.zeros((2, 32), np.float32)}


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def cnn() -> tuple[nn.Module, dict[str, np.ndarray]]:
    """Image classifier: two conv blocks with batch norm on 3x16x16 inputs, 10 logits."""
    _seeded(2)
    model = SmallCNN()
    with torch.no_grad():  # trained-looking batch-norm statistics
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval(), {"x": np.zeros((2, 3, 16, 16), np.float32)}


class TransformerBlock(nn.Module):
    def __init__(self, dim: int = 64, heads: int = 4, classes: int = 5) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(x, x, x, need_weights=False)
        x = self.norm1(x + attended)
        x = self.norm2(x + self.ffn(x))
        return torch.softmax(self.head(x.mean(dim=1)), dim=-1)


def transformer() -> tuple[nn.Module, dict[str, np.ndarray]]:
    """One encoder block (attention, LayerNorm, GELU FFN) on 16 tokens of 64, softmax head."""
    _seeded(3)
    return TransformerBlock().eval(), {"x": np.zeros((2, 16, 64), np.float32)}


class GRUClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(8, 32, batch_first=True)
        self.head = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, hidden = self.gru(x)
        return torch.sigmoid(self.head(hidden[-1]))


def gru() -> tuple[nn.Module, dict[str, np.ndarray]]:
    """Sequence classifier: GRU over 20 steps of 8 features, sigmoid score."""
    _seeded(4)
    return GRUClassifier().eval(), {"x": np.zeros((2, 20, 8), np.float32)}


class LargeOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 4))
        self.register_buffer("scale", torch.tensor([3e2, 3e3, 1e4, 2e4]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.scale


def large_outputs() -> tuple[nn.Module, dict[str, np.ndarray]]:
    """Regression with outputs in the thousands to tens of thousands (near FP16's range)."""
    _seeded(5)
    return LargeOutputs().eval(), {"x": np.zeros((2, 16), np.float32)}


FAMILIES = {
    "mlp": ("fingerprint_models:mlp", "multiclass", {}),
    "cnn": ("fingerprint_models:cnn", "multiclass", {}),
    "transformer": ("fingerprint_models:transformer", "multiclass", {}),
    "gru": ("fingerprint_models:gru", "binary", {}),
    "large_outputs": ("fingerprint_models:large_outputs", "regression", {}),
}
