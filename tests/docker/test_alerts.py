"""The alert rules name only metrics the tagger exports (a renamed metric must not silently mute them),
pass ``promtool check rules`` and their unit tests (``promtool test rules``; promtool comes with Debian's
``prometheus`` package, which .ci/services installs)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401  (registers every tagger metric)
from shared.metrics import register_worker_health

RULES = Path(__file__).resolve().parents[2] / "docker" / "prometheus" / "alerts.yml"
RULE_TESTS = RULES.with_name("alerts.test.yml")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install "
                                    "prometheus; .ci/services does it)")


def exported() -> set[str]:
    register_worker_health()  # what a worker process adds (workers/readiness.py registers them)
    families = list(REGISTRY.collect())  # a labelled counter with no child yet has no sample: its name
    return {sample.name for family in families for sample in family.samples} | {
        family.name for family in families} | {f"{f.name}_total" for f in families if f.type == "counter"}


def test_every_rule_is_well_formed_and_names_exported_metrics() -> None:
    doc = yaml.safe_load(RULES.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {
        "TaggerAccuracyDrop", "TaggerAutoValueSwitchedOff", "TaggerQueueGrowing", "TaggerNoBatchFinished",
        "TaggerDeadLetterRate", "TaggerFailureRate", "TaggerBrokerDown", "TaggerDatabaseDown"}
    names = exported()
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        used = set(re.findall(r"\btagger_[a-z_]+\b", rule["expr"]))
        assert used and used <= names, f"{rule['alert']} names metrics not exported: {used - names}"


def test_the_accuracy_alert_compares_the_estimate_with_its_reference_and_margin() -> None:
    expr = yaml.safe_load(RULES.read_text())["groups"][0]["rules"][0]["expr"]
    for metric in ("tagger_reference_accuracy", "tagger_estimated_accuracy", "tagger_accuracy_alert_margin"):
        assert metric in expr


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    run = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


@needs_promtool
def test_the_rules_unit_tests_pass_and_cover_every_alert() -> None:
    run = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c.get("exp_alerts")}
    rules = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert fired == rules  # each alert is shown to fire at least once
