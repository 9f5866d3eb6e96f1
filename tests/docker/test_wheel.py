"""The images install the project non-editable (``pip install /app``): the built wheel must carry
the data the services read at run time — the default model, the sample, the review page."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NEEDED = ("shared/default_model/manifest.json", "shared/default_model/head.safetensors",
          "shared/sample/dataset.yaml", "api/static/review.html", "api/static/review.js",
          "api/static/review.css")


def test_wheel_carries_runtime_data(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in NEEDED if n not in names]
    assert not missing, f"{wheel.name} lacks {missing}; see [tool.setuptools.package-data]"
