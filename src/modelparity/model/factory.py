"""PyTorch models given as `module:factory` entry points: recognising one, and building it
(module and example inputs). Building imports torch: only the export child and torch backends
call it."""

from __future__ import annotations

import os
from typing import Any

from modelparity.entrypoints import load_entry_point, looks_like_entry_point
from modelparity.errors import ModelError
from modelparity.model.prepared import FACTORY_FORM, exc_text


def is_entry_point(model: str) -> bool:
    return not os.path.exists(model) and looks_like_entry_point(model)


def load_factory(entry: str) -> tuple[Any, dict[str, Any]]:
    """Import `module:factory`, call it, return (module in eval mode, example inputs as tensors).

    Raises `ModelError` naming the entry point and the expected form. Imports torch: call it in
    a worker process only (the export child, a torch backend).
    """
    import numpy as np
    import torch

    factory = load_entry_point(entry, ModelError, expected=FACTORY_FORM)
    try:
        result = factory()
    except Exception as exc:
        raise ModelError(f"{entry}: the factory raised {exc_text(exc)}") from None

    if isinstance(result, torch.nn.Module):
        module, examples = result, getattr(result, "example_inputs", None)
    elif isinstance(result, (tuple, list)) and len(result) == 2:
        module, examples = result
    else:
        raise ModelError(f"{entry}: returned {type(result).__name__}; {FACTORY_FORM}")
    if not isinstance(module, torch.nn.Module):
        raise ModelError(
            f"{entry}: returned a {type(module).__name__} as the module; {FACTORY_FORM}"
        )
    if not isinstance(examples, dict) or not examples:
        got = "no example_inputs" if examples is None else type(examples).__name__
        raise ModelError(f"{entry}: example inputs are {got}; {FACTORY_FORM}")
    tensors: dict[str, Any] = {}
    for name, value in examples.items():
        if not isinstance(name, str):
            raise ModelError(
                f"{entry}: example input name {name!r} is not a string; {FACTORY_FORM}"
            )
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        elif isinstance(value, np.generic):
            value = torch.from_numpy(np.asarray(value))
        if not isinstance(value, torch.Tensor):
            raise ModelError(
                f"{entry}: example input '{name}' is a {type(value).__name__}; {FACTORY_FORM}"
            )
        tensors[name] = value
    module.eval()
    return module, tensors


def output_names_for(structure: Any) -> tuple[str, ...]:
    """'output' for a single tensor, 'output_0', 'output_1', ... for anything nested."""
    import torch
    from torch.utils import _pytree

    if isinstance(structure, torch.Tensor):
        return ("output",)
    leaves = _pytree.tree_leaves(structure)
    return tuple(f"output_{i}" for i in range(len(leaves)))
