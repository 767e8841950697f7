"""User-facing errors.

Every problem caused by what the user gave us (a file, an option, a backend spec) is raised as a
`ModelParityError` whose message is one line naming the file or option and what was expected.
The CLI prints that line and exits 2; only `--debug` shows a traceback.
"""

from __future__ import annotations


class ModelParityError(Exception):
    """A problem with the user's input, explained in one line."""


class SpecError(ModelParityError):
    """A backend spec string that cannot be parsed or names an unknown runtime or option."""


class ModelError(ModelParityError):
    """A model file or entry point that cannot be loaded."""


class InputError(ModelParityError):
    """Input data or labels that do not fit the model or the task."""


class BackendUnavailable(ModelParityError):
    """A runtime, device or execution provider that is not installed or not present here."""
