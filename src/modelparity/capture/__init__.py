"""Capture anywhere, compare anywhere: a backend's outputs kept as a portable artifact
(`capture`), and the whole audit run from artifacts and live backends alike (`compare`)."""

from modelparity.capture.artifact import Capture, Manifest
from modelparity.capture.compare import compare
from modelparity.capture.run import capture

__all__ = ["Capture", "Manifest", "capture", "compare"]
