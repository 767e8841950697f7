"""Per-node localization: where in the graph a candidate's error comes from (`localize`)."""

from modelparity.locate.analyse import NodeError, OpSummary
from modelparity.locate.expose import Exposure, Node, expose
from modelparity.locate.result import FinalOutput, LocateResult
from modelparity.locate.run import localize

__all__ = ["Exposure", "FinalOutput", "LocateResult", "Node", "NodeError", "OpSummary",
           "expose", "localize"]
