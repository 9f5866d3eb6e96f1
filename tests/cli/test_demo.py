"""``tagger demo`` on the embedded defaults: SQLite, a local object store, an in-process worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from shared.config import Settings
from tests.workers.procs import REPO


def test_demo_tags_the_sample_end_to_end(tmp_path: Path, model_dir: Path, settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAGGER_", "AWS_"))}
    env.update(TAGGER_MODEL_DIR=str(model_dir), TAGGER_CACHE_DIR=str(settings.cache_dir), TAGGER_DEVICE="cpu",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "cli.main", "demo", "--n", "20"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "20/20 events tagged" in out and "events/s" in out, out[-4000:]
    pairs = re.search(r"\(product,\s+axis\)\s+pairs:\s+(\d+)\s+applied,\s+(\d+)\s+for\s+review", out)
    assert pairs and int(pairs[1]) + int(pairs[2]) == 20 * 7, out[-4000:]  # 7 axes per product
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'var' / 'tagger.db'}")
    try:
        with engine.connect() as conn:
            sql = "SELECT status, count(*) FROM tagging_events GROUP BY status"
            assert dict(conn.execute(sa.text(sql)).all()) == {"tagged": 20}
            assert conn.scalar(sa.text("SELECT count(DISTINCT product_id) FROM product_tags")) == 20
    finally:
        engine.dispose()
    assert len(list((tmp_path / "var" / "demo" / "objects").iterdir())) >= 20
