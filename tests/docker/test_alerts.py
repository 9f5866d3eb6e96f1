"""The alert rules name only metrics the tagger exports (a renamed metric must not silently mute them)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401  (registers every tagger metric)

RULES = Path(__file__).resolve().parents[2] / "docker" / "prometheus" / "alerts.yml"


def exported() -> set[str]:
    return {sample.name for family in REGISTRY.collect() for sample in family.samples} | {
        family.name for family in REGISTRY.collect()}


def test_every_rule_is_well_formed_and_names_exported_metrics() -> None:
    doc = yaml.safe_load(RULES.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {"TaggerAccuracyDrop"}
    names = exported()
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        used = set(re.findall(r"\btagger_[a-z_]+\b", rule["expr"]))
        assert used and used <= names, f"{rule['alert']} names metrics not exported: {used - names}"


def test_the_accuracy_alert_compares_the_estimate_with_its_reference_and_margin() -> None:
    expr = yaml.safe_load(RULES.read_text())["groups"][0]["rules"][0]["expr"]
    for metric in ("tagger_reference_accuracy", "tagger_estimated_accuracy", "tagger_accuracy_alert_margin"):
        assert metric in expr
