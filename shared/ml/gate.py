"""The champion/challenger gate: a new model goes live only when it is measurably better.

Rule: on the frozen evaluation set, the challenger may not be worse than the champion on any
axis they share by more than ``tolerance`` (headline metric: accuracy, micro-F1 for multi-label),
and must be strictly better on their mean. Axes or values only the challenger knows (learned from
new labels) are allowed and reported; they cannot be compared, so they do not count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from shared.ml.evaluation import headline


@dataclass
class GateDecision:
    promote: bool
    reason: str
    per_axis: dict[str, dict[str, float | None]] = field(default_factory=dict)
    new_axes: list[str] = field(default_factory=list)
    new_values: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def decide(
    champion: dict[str, dict], challenger: dict[str, dict], tolerance: float,
    champion_values: dict[str, list[str]] | None = None,
    challenger_values: dict[str, list[str]] | None = None,
) -> GateDecision:
    """Compare two ``axes`` score tables (as ``evaluate_records`` returns them)."""
    shared = [a for a in champion if a in challenger and headline(champion[a]) is not None
              and headline(challenger[a]) is not None]
    per_axis = {a: {"champion": headline(champion[a]), "challenger": headline(challenger[a])}
                for a in shared}
    new_axes = sorted(a for a in challenger if a not in champion)
    new_values = {}
    if champion_values is not None and challenger_values is not None:
        for a, vals in challenger_values.items():
            added = sorted(set(vals) - set(champion_values.get(a, [])))
            if added and a in champion_values:
                new_values[a] = added
    decision = GateDecision(False, "", per_axis, new_axes, new_values)
    if not shared:
        decision.reason = "no axis in common with the champion on the evaluation set"
        return decision
    worse = [f"{a} {s['challenger']:.4f} < {s['champion']:.4f} - {tolerance}"
             for a, s in per_axis.items() if s["challenger"] < s["champion"] - tolerance]
    mean_champ = sum(s["champion"] for s in per_axis.values()) / len(per_axis)
    mean_chall = sum(s["challenger"] for s in per_axis.values()) / len(per_axis)
    if worse:
        decision.reason = "worse beyond tolerance on " + "; ".join(worse)
    elif mean_chall <= mean_champ:
        decision.reason = f"not better overall: mean {mean_chall:.4f} <= champion {mean_champ:.4f}"
    else:
        decision.promote = True
        decision.reason = f"better overall: mean {mean_chall:.4f} > champion {mean_champ:.4f}"
    if new_axes:
        decision.reason += f"; new axes {new_axes}"
    if new_values:
        decision.reason += f"; new values {new_values}"
    return decision
