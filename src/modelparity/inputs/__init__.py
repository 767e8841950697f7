"""Model inputs: synthetic, .npz/.npy (files or shard directories), CSV/Parquet, or user code.

Every source is a picklable frozen dataclass whose `batches(batch_size)` yields the same
`dict[str, np.ndarray]` batches (model input names, model dtypes) on every call, reading the
data in chunks so memory does not grow with the data set. No ML runtime is imported here.
"""

from modelparity.inputs.arrays import DirectorySource, NpySource, NpzSource
from modelparity.inputs.base import (
    FirstSamples,
    InputSource,
    check_inputs,
    conform_batch,
    content_digest,
    rebatch,
)
from modelparity.inputs.class_names import as_class_names, load_class_names
from modelparity.inputs.entrypoint import EntryPointSource
from modelparity.inputs.labels import load_labels
from modelparity.inputs.sources import open_inputs
from modelparity.inputs.synthetic import SyntheticSource, parse_shape
from modelparity.inputs.tabular import CsvSource, ParquetSource

__all__ = [
    "CsvSource",
    "DirectorySource",
    "EntryPointSource",
    "FirstSamples",
    "InputSource",
    "NpySource",
    "NpzSource",
    "ParquetSource",
    "SyntheticSource",
    "as_class_names",
    "check_inputs",
    "conform_batch",
    "content_digest",
    "load_class_names",
    "load_labels",
    "open_inputs",
    "parse_shape",
    "rebatch",
]
