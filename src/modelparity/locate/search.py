"""The keep-in-FP32 search: which nodes to keep in FP32 so a low-precision run meets a policy.

Pure Python over a ranking and a `holds(kept)` callback (one audit of the mixed model per
call, the costly part, so the search is built to make few of them):

1. ranking (`rank`): the nodes `locate` found amplifying error, largest gain first, each
   followed by the producers of what it reads (keeping a Softmax in FP32 does not help while
   its input is still stored in FP16: the rounding happened there); then every other node by
   its error, largest first (ranked only once the whole model in the low precision fails);
2. grow: keep the first 1, 2, 4, 8 ... ranked nodes until the policy holds (at most
   log2(N) + 1 evaluations);
3. bisect: the shortest ranked prefix that holds, between the last failing and the first
   holding length (log2 of the gap);
4. prune: with at most PRUNE nodes left, drop each one (least ranked first) whose removal
   still holds, so no kept node is redundant.

Greedy search over a locate ranking, as NNCF's accuracy control does over its ranking of
quantized groups (rank, revert, re-validate), rather than onnxconverter-common's
`auto_convert_mixed_precision`, which bisects the graph's node list in order without knowing
where the error comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from modelparity.locate.analyse import NodeError
from modelparity.locate.expose import Node

PRUNE = 16  # pruning costs one evaluation per kept node: bounded


@dataclass(frozen=True)
class Search:
    kept: tuple[int, ...] | None  # node positions, in ranking order; None: never held
    evaluations: int
    steps: tuple[tuple[tuple[int, ...], bool], ...]  # every set tried, and whether it held


def rank(nodes: Sequence[Node], judged: Sequence[NodeError]) -> list[int]:
    """Node positions, most likely to need FP32 first (see the module's docstring)."""
    producer = {name: node.index for node in nodes for name in node.outputs}
    order: list[int] = []
    for entry in sorted((j for j in judged if j.gain > 1), key=lambda j: -j.gain):
        node = next(n for n in nodes if n.index == entry.index)
        for index in (node.index, *(producer[name] for name in node.inputs
                                    if name in producer)):
            if index not in order:
                order.append(index)
    by_error = sorted(judged, key=lambda j: -(j.error if j.error == j.error else -1.0))
    order += [j.index for j in by_error if j.index not in order]
    order += [n.index for n in nodes if n.index not in order]  # never compared: last
    return order


def search(ranked: Sequence[int] | Callable[[], Sequence[int]],
           holds: Callable[[frozenset[int]], bool]) -> Search:
    """`ranked` may be a function that ranks: it is called only once the whole model in the
    low precision fails, so a model that needs no node in FP32 costs one evaluation and no
    ranking (locate's two audits)."""
    steps: list[tuple[tuple[int, ...], bool]] = []

    def check(kept: Sequence[int]) -> bool:
        ok = holds(frozenset(kept))
        steps.append((tuple(kept), ok))
        return ok

    if check(()):
        return Search((), len(steps), tuple(steps))
    ranked = list(ranked() if callable(ranked) else ranked)
    low, size = 0, 1  # ranked[:low] fails; find a size that holds
    while not check(ranked[:size]):
        if size >= len(ranked):
            return Search(None, len(steps), tuple(steps))
        low, size = size, min(2 * size, len(ranked))
    high = size
    while high - low > 1:
        middle = (low + high) // 2
        if check(ranked[:middle]):
            high = middle
        else:
            low = middle
    kept = list(ranked[:high])
    if len(kept) <= PRUNE:
        for index in reversed(kept[:-1] if len(kept) > 1 else []):
            trial = [i for i in kept if i != index]
            if check(trial):
                kept = trial
    return Search(tuple(kept), len(steps), tuple(steps))
