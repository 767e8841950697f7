"""Resume: each finished backend is saved in the run's folder as it finishes (JSON summary +
NPZ of its per-sample decisions), keyed by the run's settings; a later run with `resume` and
the same key reads it back instead of running it again."""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

from modelparity.decisions.store import (
    decided_path,
    element_flips_path,
    load_decided,
    load_element_flips,
    save_decided,
    save_element_flips,
)
from modelparity.execute.outcome import BackendRun
from modelparity.execute.spool import OutputSpool
from modelparity.folders import write_atomic
from modelparity.numerics import ErrorStats
from modelparity.numerics.latency import Latency
from modelparity.numerics.roundtrip import RoundTrip
from modelparity.serialize import jsonable
from modelparity.spec import slug


def _path(folder: str, spec: str) -> str:
    return os.path.join(folder, slug(spec) + ".json")


def save(run: BackendRun, folder: str, key: str) -> None:
    """Write a finished `BackendRun` (ok only) under `folder`."""
    path = _path(folder, run.spec)
    data = jsonable({
        "spec": run.spec, "status": run.status, "run_key": key,
        "description": run.description,
        "latency": run.latency.to_dict() if run.latency else None,
        "errors": {name: stats.to_dict() for name, stats in run.errors.items()},
        "roundtrip_counts": run.roundtrip.to_counts() if run.roundtrip is not None else None,
    })
    assert run.decided is not None
    save_decided(decided_path(folder, run.spec), run.decided)
    if run.element_flips is not None:
        save_element_flips(element_flips_path(folder, run.spec), run.element_flips)
    write_atomic(path, json.dumps(data))


def load(folder: str, planned: Any, key: str) -> BackendRun | None:
    """The `BackendRun` an earlier run with the same key saved for `planned`, or None."""
    path = _path(folder, planned.text)
    if not os.path.exists(path) or not os.path.exists(path[:-5] + ".npz"):
        return None
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    if data.get("run_key") != key or data.get("status") != "ok":
        return None
    counts = data.get("roundtrip_counts")
    try:
        return BackendRun(
            spec=planned.text, role=planned.role, description={**data["description"],
                                                               "resumed": True},
            latency=Latency.from_dict(data["latency"]) if data.get("latency") else None,
            errors={name: ErrorStats.from_dict(stats)
                    for name, stats in (data.get("errors") or {}).items()},
            decided=load_decided(decided_path(folder, planned.text)),
            roundtrip=RoundTrip.from_counts(counts) if counts else None,
            element_flips=load_element_flips(element_flips_path(folder, planned.text)),
            resumed=True)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None  # a damaged saved result (a 0-byte .npz) is run again, never half-read


def saved_reference(workdir: str, planned: Any, key: str
                    ) -> tuple[BackendRun, OutputSpool] | None:
    """The reference of an earlier run with the same settings, with its spool, or None."""
    spool = OutputSpool.load(os.path.join(workdir, "reference"), key)
    if spool is None:
        return None
    run = load(os.path.join(workdir, "backends"), planned, key)
    return None if run is None else (run, spool)
