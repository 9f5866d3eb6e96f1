"""Label spaces: which values each axis has, and the items' targets as arrays."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from shared.ml.dataset import AxisKind, Record


@dataclass
class Axis:
    """One axis of the model's output: its values (most frequent first), calibration, thresholds."""

    name: str
    kind: AxisKind
    values: list[str]
    temperature: float = 1.0
    thresholds: dict[str, float] = field(default_factory=dict)
    default_threshold: float = 1.01  # never auto until calibration says otherwise
    # Per value, what calibration saw at its threshold (shared.ml.calibration.value_threshold):
    # proposed, n, hits, lower_bound, threshold, auto, confidence. Empty in older manifests.
    evidence: dict[str, dict] = field(default_factory=dict)

    def threshold(self, value: str) -> float:
        return self.thresholds.get(value, self.default_threshold)

    def to_json(self) -> dict:
        out = {
            "kind": self.kind,
            "values": self.values,
            "temperature": self.temperature,
            "thresholds": self.thresholds,
            "default_threshold": self.default_threshold,
        }
        if self.evidence:  # absent rather than empty: older manifests round-trip unchanged
            out["evidence"] = self.evidence
        return out

    @classmethod
    def from_json(cls, name: str, d: dict) -> Axis:
        return cls(
            name=name,
            kind=d["kind"],
            values=list(d["values"]),
            temperature=float(d.get("temperature", 1.0)),
            thresholds={k: float(v) for k, v in d.get("thresholds", {}).items()},
            default_threshold=float(d.get("default_threshold", 1.01)),
            evidence={k: dict(v) for k, v in d.get("evidence", {}).items()},
        )


def build_axes(records: list[Record], kinds: dict[str, AxisKind], min_count: int = 1) -> list[Axis]:
    """Values seen at least ``min_count`` times in ``records`` (the training part)."""
    axes = []
    for name, kind in kinds.items():
        counts = Counter(v for r in records for v in r.labels.get(name, []))
        values = [v for v, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
        if values:
            axes.append(Axis(name=name, kind=kind, values=values))
    return axes


def targets(records: list[Record], axis: Axis) -> np.ndarray:
    """single: (n,) int class index, -1 where unlabelled or unknown value;
    multi: (n, k) float 0/1, rows of -1 where unlabelled."""
    index = {v: i for i, v in enumerate(axis.values)}
    if axis.kind == "single":
        out = np.full(len(records), -1, dtype=np.int64)
        for i, r in enumerate(records):
            vals = r.labels.get(axis.name) or []
            if vals:
                out[i] = index.get(vals[0], -2)  # -2: labelled with a value the model lacks
        return out
    multi = np.full((len(records), len(axis.values)), -1.0, dtype=np.float32)
    for i, r in enumerate(records):
        vals = r.labels.get(axis.name) or []
        if vals:
            multi[i] = 0.0
            for v in vals:
                if v in index:
                    multi[i, index[v]] = 1.0
    return multi
