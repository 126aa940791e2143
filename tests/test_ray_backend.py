"""The Ray execution backend (``execution.backend: ray``): Ray started locally with 2 CPUs, the
same records as the local backend, an actor killed mid-run loses and duplicates nothing, and a
run started on one backend resumes on the other."""

from __future__ import annotations

import json
import threading
import time

import pytest

ray = pytest.importorskip("ray")

from coderl.execution.exec_config import ExecConfig  # noqa: E402
from coderl.execution.stage import execute  # noqa: E402
from coderl.problems import load_problems  # noqa: E402

#: what a record's verdict is (timing, the worker and the cache flag may differ between runs)
SAME = ("problem_id", "index", "outcome", "tests_passed", "tests_total", "per_test", "error_type",
        "hash", "program_hash", "example_passed", "origin")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _problems(n=4):
    return load_problems("mbpp", split="train", end=n)


def _rows(problems, slow=False):
    rows = []
    for p in problems:
        gold = p.solutions[0]
        programs = [gold, "def broken(:\n", gold.replace("return", "return None and", 1),
                    "import time\ntime.sleep(0.4)\n" + gold if slow else "raise ValueError('x')\n"]
        rows += [{"problem_id": p.id, "index": i, "program": prog, "origin": "sampled"}
                 for i, prog in enumerate(programs)]
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _records(path):
    recs = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    return {(r["problem_id"], r["index"]): {k: r.get(k) for k in SAME} for r in recs}, len(recs)


def test_ray_backend_writes_the_same_results_as_the_local_one(tmp_path, local_ray):
    probs = _problems()
    samples = tmp_path / "samples.jsonl"
    _write(samples, _rows(probs))
    local = execute(probs, samples, tmp_path / "local.jsonl", ExecConfig(workers=2), progress=False)
    remote = execute(probs, samples, tmp_path / "ray.jsonl", ExecConfig(workers=2, backend="ray", ray_actors=2),
                     progress=False)
    a, na = _records(tmp_path / "local.jsonl")
    b, nb = _records(tmp_path / "ray.jsonl")
    assert na == nb == 16 and a == b
    assert local["outcomes"] == remote["outcomes"] and remote["outcomes"]["passed"] == 4
    assert remote["isolation"] == local["isolation"]   # the actors' sandbox is the local one's
    assert remote["backend"]["backend"] == "ray" and remote["backend"]["actors"] == 2
    assert local["backend"] == {"backend": "local", "workers": 2}


def test_a_killed_actor_is_replaced_and_nothing_is_lost_or_duplicated(tmp_path, local_ray, monkeypatch):
    """Every actor is killed 0.15 s after a program that sleeps 0.4 s was handed to one: that job
    (and any other in flight) dies with its actor, is sent again to a new one, and each record is
    written once."""
    from coderl.distributed import ray_executor

    made, killed = [], []
    real = ray_executor.RayExecutor._dispatch

    def dispatch(self, job, frame, cancel=None):
        if "time.sleep" in job["program"] and not killed:
            killed.append(list(self.actors))
            made.append(self)
            threading.Timer(0.15, lambda: [ray.kill(a) for a in killed[0]]).start()
        return real(self, job, frame, cancel)
    monkeypatch.setattr(ray_executor.RayExecutor, "_dispatch", dispatch)
    probs = _problems(6)
    samples, results = tmp_path / "samples.jsonl", tmp_path / "results.jsonl"
    _write(samples, _rows(probs, slow=True))
    summary = execute(probs, samples, results, ExecConfig(workers=2, backend="ray", ray_actors=2), progress=False)
    got, n = _records(results)
    assert n == len(got) == 24 and summary["executed"] == 24
    assert made[0].restarts >= 1
    local, _ = _records(_local(tmp_path, probs, samples))
    assert got == local


def _local(tmp_path, probs, samples):
    out = tmp_path / "local_ref.jsonl"
    execute(probs, samples, out, ExecConfig(workers=2), progress=False)
    return out


@pytest.mark.parametrize("first, second", [("local", "ray"), ("ray", "local")])
def test_a_run_started_on_one_backend_resumes_on_the_other(tmp_path, local_ray, first, second):
    probs = _problems()
    rows = _rows(probs)
    samples, results = tmp_path / "samples.jsonl", tmp_path / "results.jsonl"
    _write(samples, rows[:8])              # the first two problems, then the run is "killed"
    s1 = execute(probs, samples, results, ExecConfig(workers=2, backend=first), progress=False)
    _write(samples, rows)                  # all four: the second backend does only what is left
    s2 = execute(probs, samples, results, ExecConfig(workers=2, backend=second), progress=False)
    assert (s1["executed"], s2["skipped_already_done"], s2["executed"]) == (8, 8, 8)
    got, n = _records(results)
    assert n == len(got) == 16


def test_the_ray_backend_without_ray_installed_is_a_one_line_error(tmp_path, monkeypatch):
    import builtins

    from coderl.config import ConfigError
    from coderl.distributed import make_executor

    real_import = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r"execution.backend: ray needs the ray package"):
        make_executor(ExecConfig(backend="ray"))


def test_ray_settings_are_not_part_of_a_verdict_and_bad_ones_are_clear(tmp_path):
    from coderl.config import ConfigError

    assert ExecConfig(backend="ray", ray_actors=4).fingerprint() == ExecConfig().fingerprint()
    with pytest.raises(ConfigError, match="execution.backend"):
        ExecConfig(backend="spark")
    with pytest.raises(ConfigError, match="ray_actors"):
        ExecConfig(backend="ray", ray_actors=0)
