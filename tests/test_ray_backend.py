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


@pytest.fixture
def without_ray(monkeypatch):
    """``import ray`` fails, as on a machine without the package."""
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_ray)


def test_the_ray_backend_without_ray_installed_is_a_one_line_error(tmp_path, without_ray):
    from coderl.config import ConfigError
    from coderl.distributed import make_executor

    with pytest.raises(ConfigError, match=r"execution.backend: ray needs the ray package"):
        make_executor(ExecConfig(backend="ray"))


def test_ray_settings_are_not_part_of_a_verdict_and_bad_ones_are_clear(tmp_path):
    from coderl.config import ConfigError

    assert ExecConfig(backend="ray", ray_actors=4).fingerprint() == ExecConfig().fingerprint()
    with pytest.raises(ConfigError, match="execution.backend"):
        ExecConfig(backend="spark")
    with pytest.raises(ConfigError, match="ray_actors"):
        ExecConfig(backend="ray", ray_actors=0)


# -- generation on Ray (generation.backend: ray; online RL's rollouts) ------------------------------

def _sample_rows(path):
    recs = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    return {(r["problem_id"], r["index"]): (r["raw"], r["origin"], r["num_tokens"], r["finish"]) for r in recs}, len(recs)


def _gen_cfg(**kw):
    from coderl.generation import GenerationConfig

    base = dict(num_seqs=4, greedy=True, batch_size=2, max_new_tokens=8, temperature=1.0, progress=False)
    return GenerationConfig(**{**base, **kw})


def test_ray_generation_writes_the_same_samples_as_the_local_one(tmp_path, local_ray, tiny_causal_dir, mbpp_problems):
    from coderl.generation import generate

    model = str(tiny_causal_dir)
    generate(mbpp_problems, tmp_path / "local.jsonl", _gen_cfg(), model=model)
    s = generate(mbpp_problems, tmp_path / "ray.jsonl", _gen_cfg(backend="ray", ray_actors=2), model=model)
    a, na = _sample_rows(tmp_path / "local.jsonl")
    b, nb = _sample_rows(tmp_path / "ray.jsonl")
    assert na == nb == 15 and a == b
    assert len({v[0] for v in a.values()}) >= 12   # sampled programs differ: the noise is per program
    assert s["backend"]["backend"] == "ray" and s["backend"]["actors"] == 2


def test_a_killed_generation_actor_loses_and_duplicates_nothing(local_ray, tiny_causal_dir, mbpp_problems):
    """Both replicas are killed when the first chunk comes back: the chunks they held are decoded
    again by new ones, and every sample is handed on once, as the local backend decodes it."""
    from coderl.distributed.ray_generator import RayGenerator
    from coderl.generation import GenRequest, generate_samples
    from coderl.models import load_model

    reqs = [GenRequest(p, i) for p in mbpp_problems for i in range(6)]
    cfg = _gen_cfg(batch_size=1)   # chunks of 2 requests: 9 chunks over 2 actors
    seen = []
    with RayGenerator(str(tiny_causal_dir), actors=2) as gen:
        def on_sample(s):
            if not seen:
                for a in list(gen.actors):
                    ray.kill(a)
            seen.append(s.key)
        got = gen.generate(reqs, cfg, on_sample=on_sample)
        assert gen.restarts >= 1
    assert sorted(seen) == sorted(r.key for r in reqs) and len(seen) == len(set(seen)) == 18
    want = generate_samples(load_model(str(tiny_causal_dir)), reqs, cfg)
    assert [(s.key, s.raw) for s in got] == [(s.key, s.raw) for s in want]


def test_replicas_take_the_weights_they_are_sent(local_ray, tiny_causal_dir, mbpp_problems):
    """set_weights changes what the replicas sample exactly as it changes the local model (what
    online RL sends before every round)."""
    import torch

    from coderl.distributed.ray_generator import RayGenerator
    from coderl.generation import GenRequest, generate_samples
    from coderl.models import load_model

    lm = load_model(str(tiny_causal_dir))
    reqs = [GenRequest(p, i) for p in mbpp_problems for i in range(3)]
    cfg = _gen_cfg(temperature=0.7)
    before = [s.raw for s in generate_samples(lm, reqs, cfg)]
    with torch.no_grad():
        for p in lm.model.parameters():
            p.mul_(25.0)   # a sharper, different distribution
    want = [s.raw for s in generate_samples(lm, reqs, cfg)]
    assert want != before
    with RayGenerator(str(tiny_causal_dir), actors=2) as gen:
        assert [s.raw for s in gen.generate(reqs, cfg)] == before
        ray.kill(gen.actors[0])   # died between two rounds: replaced, and the new one gets the weights
        gen.set_weights(dict(lm.model.named_parameters()))
        assert gen.restarts == 1
        assert [s.raw for s in gen.generate(reqs, cfg)] == want


@pytest.mark.parametrize("first, second", [("local", "ray"), ("ray", "local")])
def test_generation_started_on_one_backend_resumes_on_the_other(tmp_path, local_ray, tiny_causal_dir,
                                                                mbpp_problems, first, second):
    from coderl.generation import generate

    model = str(tiny_causal_dir)
    generate(mbpp_problems, tmp_path / "whole.jsonl", _gen_cfg(), model=model)
    out = tmp_path / "samples.jsonl"
    generate(mbpp_problems, out, _gen_cfg(backend=first), model=model)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:6]) + lines[6][:15])   # killed: six samples and a torn line
    s = generate(mbpp_problems, out, _gen_cfg(backend=second), model=model)
    assert s["sequences"] == 9
    got, n = _sample_rows(out)
    assert n == len(got) == 15 and got == _sample_rows(tmp_path / "whole.jsonl")[0]


def test_online_rl_rollouts_on_ray_equal_the_local_ones(tmp_path, local_ray, tiny_chat_dir):
    """execution.backend ray: the rounds are sampled by replicas that get the policy's LoRA
    weights before each round, and executed on Ray: the same records and weights as locally."""
    import torch
    from safetensors.torch import load_file

    from coderl.rundir import RunDir
    from coderl.training.online_trainer import train_online
    from test_training import _online_cfg, _online_problems

    cfg = _online_cfg(tiny_chat_dir, reward="test_training:_len_reward", lr=0.2)
    runs = {}
    for backend in ("local", "ray"):
        run = RunDir(tmp_path / backend).mkdir()
        train_online(_online_problems(), run, cfg, progress=False, echo=lambda x: None,
                     exec_config=ExecConfig(workers=2, backend=backend, ray_actors=2))
        runs[backend] = run
    for r in range(2):
        rows = [_sample_rows(runs[b].online / "rounds" / f"{r:06d}" / "samples.jsonl")[0] for b in runs]
        assert rows[0] == rows[1] and len(rows[0]) == 4
    wa, wb = (load_file(str(runs[b].online / "adapter_model.safetensors")) for b in runs)
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_ray_generation_settings_are_not_part_of_the_samples():
    from coderl.config import ConfigError
    from coderl.generation.stage import fingerprint

    assert fingerprint([], _gen_cfg(backend="ray", ray_actors=3)) == fingerprint([], _gen_cfg())
    with pytest.raises(ConfigError, match="generation.backend"):
        _gen_cfg(backend="spark")


def test_replicas_that_keep_dying_are_an_error_not_a_loop(local_ray, tiny_causal_dir, mbpp_problems, monkeypatch):
    from coderl.distributed.ray_generator import MAX_TRIES, RayGenerator
    from coderl.generation import GenRequest

    with RayGenerator(str(tiny_causal_dir), actors=1) as gen:
        real = gen._spawn

        def doomed(i):
            actor = real(i)
            ray.kill(actor)
            return actor
        monkeypatch.setattr(gen, "_spawn", doomed)
        ray.kill(gen.actors[0])
        with pytest.raises(RuntimeError, match=rf"generation.backend ray: .*'{mbpp_problems[0].id}' \(index 0\) "
                                               rf"died {MAX_TRIES} times"):
            gen.generate([GenRequest(p, 0) for p in mbpp_problems], _gen_cfg())


def test_generation_on_ray_without_ray_installed_is_a_one_line_error(tmp_path, without_ray, mbpp_problems):
    from coderl.config import ConfigError
    from coderl.generation import generate

    with pytest.raises(ConfigError, match=r"generation.backend: ray needs the ray package"):
        generate(mbpp_problems, tmp_path / "s.jsonl", _gen_cfg(backend="ray"), model="default")
