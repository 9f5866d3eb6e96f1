"""A producer must be able to publish without loading a model: the API, the sweeper and the command
line's start-up never import torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_api_imports_no_torch() -> None:
    code = textwrap.dedent("""
        import sys
        from fastapi.testclient import TestClient
        import api.app, api.auth, api.health, api.ingest, cli.main, workers.sweeper
        from shared.config import Settings
        app = api.app.create_app(Settings(database_url="sqlite://", broker_url="redis://127.0.0.1:1/0"))
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "torchvision", "transformers"})
        print(heavy)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
