"""The benchmark scripts still start (their imports of coderl are checked by running ``--help``):
a renamed or removed name in coderl broke benchmarks/learning.py once without any test failing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name != "same_run.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_starts(script):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage" in r.stdout.lower()
