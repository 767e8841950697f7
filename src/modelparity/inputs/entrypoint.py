"""Inputs produced by the user's own code: `module:function` returning an iterable of dicts.

The function is called afresh on every pass, so it must return the same data each time (it is
the user's loader, e.g. a preprocessing pipeline). Chunks may have any size; they are
re-batched.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from modelparity.entrypoints import load_entry_point
from modelparity.errors import InputError
from modelparity.inputs.base import Batch, conform_batch, one_line, rebatch
from modelparity.inputs.layout import DEFAULT_LAYOUT, Layout
from modelparity.model.signature import Signature


def _load(spec: str, directory: str) -> Any:
    return load_entry_point(spec, InputError, directory=directory,
                            expected="an input entry point module:function")


@dataclass(frozen=True)
class EntryPointSource:
    spec: str  # "module:function"
    directory: str  # added to sys.path (the working directory at open time)
    signature: Signature
    layout: Layout = DEFAULT_LAYOUT  # items in the model's own layout, moved to samples-first

    @property
    def num_samples(self) -> int | None:
        return None

    def _chunks(self) -> Iterator[Batch]:
        func = _load(self.spec, self.directory)
        try:
            items = iter(func())
        except Exception as exc:
            raise InputError(
                f"{self.spec}: calling it raised {type(exc).__name__}: {one_line(exc)} "
                f"(expected an iterable of dicts of arrays)"
            ) from exc
        index = 0
        while True:
            try:
                item = next(items)
            except StopIteration:
                return
            except Exception as exc:
                raise InputError(
                    f"{self.spec}: raised {type(exc).__name__} while producing item {index}: "
                    f"{one_line(exc)}"
                ) from exc
            if not isinstance(item, dict):
                raise InputError(
                    f"{self.spec}: item {index} is a {type(item).__name__}, expected a dict of "
                    f"arrays keyed by input name"
                )
            yield conform_batch(item, self.signature, f"{self.spec} (item {index})",
                                self.layout)
            index += 1

    def batches(self, batch_size: int) -> Iterator[Batch]:
        return rebatch(self._chunks(), batch_size, self.spec)

    def items(self) -> Iterator[Batch]:
        """Each item as it came, one call each: never re-batched or concatenated."""
        return self._chunks()

    def describe(self) -> str:
        return f"entry point {self.spec}"


def open_entry_point(spec: str, signature: Signature,
                     layout: Layout = DEFAULT_LAYOUT) -> EntryPointSource:
    """Check the module can be found now; it is imported (and run) only when read."""
    directory = os.getcwd()
    if directory not in sys.path:
        sys.path.insert(0, directory)
    module_name = spec.partition(":")[0]
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise InputError(f"{spec}: cannot find module '{module_name}' ({one_line(exc)})") from exc
    except Exception as exc:  # a parent package failed while importing
        raise InputError(
            f"{spec}: importing '{module_name}' raised {type(exc).__name__}: {one_line(exc)}"
        ) from exc
    if found is None:
        raise InputError(
            f"{spec}: no module '{module_name}' (expected an input entry point module:function "
            f"importable from {directory})"
        )
    return EntryPointSource(spec, directory, signature, layout)
