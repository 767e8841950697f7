"""The demo's models, built in code (nothing is downloaded). Each factory returns
`(module, example_inputs)`, the form `modelparity run module:factory` accepts."""

from __future__ import annotations

import numpy as np


def mlp_4x3() -> tuple[object, dict[str, np.ndarray]]:
    """The published case's shape: one linear layer, 4 inputs, 3 outputs, no bias, sigmoid."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False), torch.nn.Sigmoid())
    return model.eval(), {"x": np.zeros((2, 4), dtype=np.float32)}


def breast_cancer_data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled breast-cancer data (569 samples, 30 features), no download."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return data.data.astype(np.float32), data.target.astype(np.int64)


def breast_cancer_classifier() -> tuple[object, dict[str, np.ndarray]]:
    """A small MLP trained here on the breast-cancer data; standardisation is inside the model,
    so the ONNX file takes the raw 30 features and outputs P(benign). Strong weight decay keeps
    it modestly confident, as many production classifiers are (~97.5% accuracy)."""
    import torch

    features, target = breast_cancer_data()
    torch.manual_seed(0)
    mean = torch.from_numpy(features.mean(axis=0))
    std = torch.from_numpy(features.std(axis=0) + 1e-6)

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(30, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net((x - self.mean) / self.std))

    model = Classifier()
    x = torch.from_numpy(features)
    y = torch.from_numpy(target.astype(np.float32)).unsqueeze(1)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(100):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy(model(x), y)
        loss.backward()
        optimiser.step()
    return model.eval(), {"x": features[:2]}
