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


def test_two_lanes_of_one_label_keep_both_sets(tmp_path):
    """Two processes evaluating one model on different sets under one --label: each reads the
    record when it starts; what the second writes must keep the set the first stored meanwhile."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("learning_bench", ROOT / "benchmarks" / "learning.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    out = tmp_path / "m.json"
    a = {"label": "m", "model": "x", "sets": {}}
    b = {"label": "m", "model": "x", "sets": {}}  # both started before either stored a set
    a["sets"]["mbpp-heldout"] = {"metrics": {"greedy_pass@1": [1, 10]}}
    mod.store_set(out, a, "mbpp-heldout")
    b["sets"]["humaneval"] = {"metrics": {"greedy_pass@1": [2, 10]}}
    mod.store_set(out, b, "humaneval")
    import json

    assert sorted(json.loads(out.read_text())["sets"]) == ["humaneval", "mbpp-heldout"]
    a["sets"]["mbpp-heldout"] = {"metrics": {"greedy_pass@1": [3, 10]}}  # a set rerun replaces its own
    mod.store_set(out, a, "mbpp-heldout")
    sets = json.loads(out.read_text())["sets"]
    assert sets["mbpp-heldout"]["metrics"]["greedy_pass@1"] == [3, 10] and "humaneval" in sets


def test_checkpoint_curve_resumes_and_reruns_changed_weights(tmp_path, tiny_causal_dir, capsys):
    """A point stored for the same weights is not run again; a checkpoint whose weights changed is."""
    import importlib.util
    import json
    import shutil

    spec = importlib.util.spec_from_file_location("curve_bench", ROOT / "benchmarks" / "checkpoint_curve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ck = tmp_path / "step-000010"
    shutil.copytree(tiny_causal_dir, ck)
    args = ["run", str(ck), "--label", "t", "--limit", "2", "--store", str(tmp_path / "store"),
            "--runs-dir", str(tmp_path / "runs")]
    mod.main(args)
    rec = json.loads((tmp_path / "store" / "curve_t.json").read_text())
    assert [p["step"] for p in rec["points"]] == [10] and rec["problems"] == 2 and rec["split"] == "validation"
    assert sum(rec["points"][0]["outcomes"].values()) == 2
    assert (tmp_path / "store" / "curve_t.png").is_file()
    capsys.readouterr()
    mod.main(args)
    assert "step 10: stored" in capsys.readouterr().out
    w = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(w[:-1] + bytes([w[-1] ^ 1]))  # other weights, same size
    assert mod._digest(ck) != rec["points"][0]["digest"]
    mod.main(args)
    assert "step 10: stored" not in capsys.readouterr().out
    point = json.loads((tmp_path / "store" / "curve_t.json").read_text())["points"][0]
    assert point["digest"] == mod._digest(ck) and sum(point["outcomes"].values()) == 2
    assert len(list((tmp_path / "runs" / "t").glob("step-000010-*/results.jsonl"))) == 2  # generated anew
    ck2 = tmp_path / "step-000020"
    shutil.copytree(tiny_causal_dir, ck2)
    mod.main(["run", str(ck2), "--label", "t", "--limit", "2", "--store", str(tmp_path / "store"),
              "--runs-dir", str(tmp_path / "runs")])
    assert [p["step"] for p in json.loads((tmp_path / "store" / "curve_t.json").read_text())["points"]] == [10, 20]
    with pytest.raises(SystemExit, match="another problem selection"):
        mod.main(args[:5] + ["3"] + args[6:])
    with pytest.raises(SystemExit, match="another problem selection"):  # the same label on HumanEval
        mod.main(args + ["--source", "humaneval"])
    with pytest.raises(SystemExit, match="one split, test"):
        mod.main(["run", str(ck), "--label", "h", "--source", "humaneval", "--split", "validation"])
    mod.main(["run", str(ck), "--label", "h", "--source", "humaneval", "--limit", "1", "--store",
              str(tmp_path / "store"), "--runs-dir", str(tmp_path / "runs")])
    rec = json.loads((tmp_path / "store" / "curve_h.json").read_text())
    assert (rec["source"], rec["split"], rec["problems"]) == ("humaneval", "test", 1)
    assert sum(rec["points"][0]["outcomes"].values()) == 1
