"""`open_inputs`: what the user gave as `--data` -> one InputSource."""

from __future__ import annotations

import os

from modelparity.entrypoints import looks_like_entry_point
from modelparity.errors import InputError
from modelparity.inputs.arrays import open_directory, open_npy, open_npz
from modelparity.inputs.base import InputSource
from modelparity.inputs.entrypoint import open_entry_point
from modelparity.inputs.layout import DEFAULT_LAYOUT, Layout
from modelparity.inputs.synthetic import open_synthetic
from modelparity.inputs.tabular import open_csv, open_parquet
from modelparity.model.signature import Signature

ACCEPTED = (
    "a .npz (one array per input), a .npy (single-input models), a directory of .npz/.npy "
    "shards, a .csv or .parquet table, or module:function"
)


def open_inputs(
    data: str | os.PathLike[str] | None,
    signature: Signature,
    *,
    shapes: dict[str, tuple[int, ...]] | None = None,
    samples: int = 1000,
    seed: int = 0,
    value_range: tuple[float, float] = (-1.0, 1.0),
    exclude_columns: tuple[str, ...] = (),
    layout: Layout = DEFAULT_LAYOUT,
) -> InputSource:
    """Pick the source for `data` (None: synthetic) and check what can be checked cheaply.

    Headers and table schemas are checked here; the first batch is checked by `check_inputs`.
    `signature` is canonical (samples on axis 0); `layout` says where the data keeps them.
    """
    shapes = dict(shapes or {})
    for name, dims in shapes.items():
        ok = isinstance(dims, (tuple, list)) and all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims
        )
        if not ok:
            raise InputError(f"--shape {name}: expected positive integer dims, got {dims!r}")
        shapes[name] = tuple(dims)
        if name not in signature.input_names:
            raise InputError(
                f"--shape {name}:{'x'.join(map(str, shapes[name]))}: '{name}' is not a model "
                f"input (inputs: {', '.join(signature.input_names)})"
            )
    if data is None:
        return open_synthetic(signature, shapes, samples, seed, value_range)
    text = os.fspath(data)
    exclude = tuple(exclude_columns)
    if os.path.isdir(text):
        return open_directory(text, text, signature, layout)
    ext = os.path.splitext(text)[1].lower()
    known = ext in (".npz", ".npy", ".csv", ".parquet", ".pq")
    if not os.path.exists(text):
        if ":" in text and looks_like_entry_point(text):
            return open_entry_point(text, signature, layout)
        if known:
            raise InputError(f"{text}: file not found")
        raise InputError(f"{text}: not found; expected {ACCEPTED}")
    if ext == ".npz":
        return open_npz(text, text, signature, layout)
    if ext == ".npy":
        return open_npy(text, text, signature, layout)
    if layout.moves:
        raise InputError(f"{text}: a table has one row per sample; --batch-axis applies to "
                         f".npz/.npy data and module:function feeds")
    if ext == ".csv":
        return open_csv(text, text, signature, exclude)
    if ext in (".parquet", ".pq"):
        return open_parquet(text, text, signature, exclude)
    raise InputError(f"{text}: unsupported input file; expected {ACCEPTED}")
