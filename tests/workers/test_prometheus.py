"""A real Prometheus (the installed binary: own port, temp dir, 1 s scrapes) scrapes a real tagging
worker and the real API; every Grafana panel expression and every alert expression is then run
through its HTTP API. Each panel expression must parse and return at least one series; each alert
expression must parse, and every series it selects must exist (alerts return nothing while healthy);
the server itself must load the alert rules without error."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery

from tests.workers.procs import free_port, wait_for
from tests.workers.stack import Images, Stack, event

ROOT = Path(__file__).resolve().parents[2]  # (beside the worker fixtures it needs)
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "tagger.json"
RULES = ROOT / "docker" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus")

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary is not installed "
                                "(apt-get install prometheus; .ci/services does it)")


def panel_exprs() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p["targets"]]


def alert_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def selectors(expr: str) -> list[str]:
    """The vector selectors of ``expr`` (metric name and its label matchers, no range)."""
    return sorted({m.group(0) for m in re.finditer(r"\btagger_[a-z_]+(\{[^}]*\})?", expr)})


class Api:
    """The real app (api.app.create_app, which installs the request timer) under uvicorn, in a thread."""

    def __init__(self, settings: Any) -> None:
        import uvicorn

        from api.app import create_app

        app = create_app(settings)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 30, "the API to start")

    def post(self, path: str, body: object, token: str) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def api(main_stack: Stack) -> Iterator[tuple[Api, dict[str, str]]]:
    from shared.apikeys import create_key
    from shared.config import Settings
    from shared.db.session import session_scope

    url = main_stack.db.url
    with session_scope(url) as session:
        tokens = {role: create_key(session, f"prom-test-{role}", role)[1] for role in ("reader", "producer")}
    server = Api(Settings(database_url=url, broker_url=main_stack.redis.url, tagging_queue="tagging"))
    yield server, tokens
    server.stop()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[dict], str]]:
    procs: list[subprocess.Popen] = []

    def start(scrape: dict) -> str:
        port = free_port()
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(RULES)], "scrape_configs": scrape["jobs"]}
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = tmp_path / "prometheus.log"
        procs.append(subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=open(log, "w"), stderr=subprocess.STDOUT))  # noqa: SIM115
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                assert procs[-1].poll() is None, log.read_text()
                return False

        wait_for(ready, 60, "prometheus to be ready", every=0.5)
        return base

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def query(base: str, expr: str) -> dict:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # a parse error is a 400 with a JSON body
        return json.loads(exc.read())


def test_every_panel_and_alert_expression_runs_on_real_data(
        main_stack: Stack, images: Images, api: tuple[Api, dict[str, str]],
        prometheus: Callable[[dict], str]) -> None:
    server, tokens = api
    worker_port = main_stack.worker.env["TAGGER_METRICS_PORT"]
    base = prometheus({"jobs": [
        {"job_name": "api", "metrics_path": "/metrics", "authorization": {"credentials": tokens["reader"]},
         "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}]},
        {"job_name": "worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
    ]})
    wait_for(lambda: len([r for r in query(base, "up == 1")["data"]["result"]]) == 2, 60,
             "prometheus to scrape the api and the worker", every=0.5)

    # Work for every panel: events in through the API, tagged; a poison message dead-lettered; a value
    # switched off by the audit (a row in auto_switches, as shared/audit.py writes it).
    # Enough items for the label-free accuracy estimate (shared.ml.live_accuracy.MIN_ITEMS).
    from shared.ml.live_accuracy import MIN_ITEMS

    evs = [event(title=r.text, image_uri=images.file_uri(r.id))
           for r in (images.records * (MIN_ITEMS // len(images.records) + 1))[:MIN_ITEMS + 2]]
    assert server.post("/v1/events", evs, tokens["producer"]) in (200, 202)
    raw = Celery("raw-producer", broker=main_stack.redis.url, set_as_current=False)
    raw.conf.update(task_serializer="json", broker_connection_retry_on_startup=False)
    try:
        raw.send_task("tagger.tag_product", kwargs={"event": {"title": 42}}, queue="tagging")
    finally:
        raw.close()
    main_stack.db.wait_events([e["event_id"] for e in evs], 120)
    with main_stack.db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO auto_switches (axis, value, enabled, n, hits, lower, upper, target, reason, "
            "updated_at) "
            "VALUES ('colour', 'Prometheus Test', false, 40, 30, 0.6, 0.85, 0.95, 'test', now()) "
            "ON CONFLICT DO NOTHING")
    wait_for(lambda: query(base, 'tagger_event_outcomes_total{outcome="failed"} > 0')["data"]["result"],
             60, "the dead letter to reach prometheus", every=1)
    wait_for(lambda: query(base, "tagger_auto_enabled == 0")["data"]["result"], 30,
             "the switched-off value to reach prometheus", every=1)
    time.sleep(3)

    empty, broken = [], []
    for title, expr in panel_exprs():
        got = query(base, expr)
        if got.get("status") != "success":
            broken.append((title, expr, got.get("error")))
        elif not got["data"]["result"]:
            empty.append((title, expr))
    assert not broken, broken
    assert not empty, f"panel expressions without a series: {empty}"

    missing = []
    for alert, expr in alert_exprs():
        got = query(base, expr)
        assert got.get("status") == "success", (alert, got.get("error"))
        for sel in selectors(expr):
            if not query(base, sel)["data"]["result"]:
                missing.append((alert, sel))
    assert not missing, f"alert expressions select series that do not exist: {missing}"
    # The switched-off value does fire its alert's expression (its `for` aside).
    fired = dict(alert_exprs())["TaggerAutoValueSwitchedOff"]
    assert [r["metric"]["value"] for r in query(base, fired)["data"]["result"]] == ["Prometheus Test"]

    with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=30) as resp:
        rules = [r for g in json.loads(resp.read())["data"]["groups"] for r in g["rules"]]
    assert len(rules) == len(alert_exprs())
    assert all(r["health"] in ("ok", "unknown") for r in rules), [(r["name"], r.get("lastError"))
                                                                  for r in rules]
