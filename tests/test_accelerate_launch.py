"""Data-parallel training under ``accelerate launch``: two CPU processes (gloo, through
``configs/accelerate/cpu_2proc.yaml``) train SFT and CodeRL's RL on a tiny model and end with the
weights of one process at the same global batch.

The Trainer's global batch is ``batch_size x grad_accum x processes`` programs per optimizer
step: :class:`~coderl.training.batches.FixedBatches` plans ``G = grad_accum x processes``
micro-batches per step, process ``p`` of ``n`` runs micro-batches ``p, p + n, ...``, each loss is
divided by that process's share (``grad_accum``) and DDP averages the gradients over the ``n``
processes: the mean over all ``G`` micro-batches, as one process with ``grad_accum x n``
computes it. So 2 processes x grad_accum 1 here equal 1 process x grad_accum 2 (same data order,
same steps, same updates) up to the order of float sums (here: bit for bit, as halving is exact).

Settings that must match for that: ``lora_dropout 0`` (every process is seeded alike, so with
dropout the two processes would draw one mask where one process draws two different ones); and a decaying
learning rate takes the same values (the Trainer's Accelerator steps the scheduler once per
optimizer step, ``step_scheduler_with_optimizer=False``; accelerate's default would step it once
per process: ``test_linear_schedule_..`` pins it).

One launch (both processes) trains all three runs; the one-process references train in this
process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from coderl.models import build_prompt, extract_program, load_model
from coderl.problems import load_problems
from coderl.records import program_hash
from coderl.training import RLConfig, SFTConfig, train_rl, train_sft
from coderl.rundir import RunDir
from coderl.training.data import gold_continuation
from coderl.training.online_config import OnlineConfig
from coderl.training.online_trainer import train_online
from coderl.training.rl_trainer import RL_DIR
from coderl.training.sft_trainer import SFT_DIR

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
CPU_CONFIG = CONFIGS / "cpu_2proc.yaml"
LAUNCH_TIMEOUT = 300      # seconds; the launch takes ~15 s on 2 busy cores (the whole file ~22 s)
ATOL = 1e-5

# what the runs share: LoRA without dropout, a constant learning rate large enough to move the
# weights well away from their start, no validation, one checkpoint at the end
COMMON = dict(mode="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0, batch_size=1, lr=1e-2,
              warmup_ratio=0.0, lr_schedule="constant", max_grad_norm=1.0, seed=3,
              val_source=None, save_every=0, progress=False, device="cpu")
RUNS = ("sft", "rl", "sft_linear", "online")


def _sample_files(tmp: Path, problems, tokenizer) -> tuple[Path, Path]:
    """Per problem: a passing sample (its gold continuation), one with a runtime error and a failed
    greedy baseline: returns 1.3 and -0.3, so every sample trains."""
    samples, results = [], []
    outcomes = {0: "passed", 1: "runtime_error", 2: "failed"}
    for p in problems:
        prompt = build_prompt(p, tokenizer, "auto", False)
        good = gold_continuation(p, prompt, p.solutions[0]) + "```"
        raws = {0: good, 1: "x)\n    return None\n```", 2: good}
        for i, raw in raws.items():
            program = extract_program(raw, prompt, p)
            samples.append({"problem_id": p.id, "index": i, "origin": "greedy" if i == 2 else "sampled",
                            "prompt": prompt.text, "raw": raw, "finish": "stop", "program": program})
            o = outcomes[i]
            results.append({"problem_id": p.id, "index": i, "outcome": o, "program_hash": program_hash(program),
                            "tests_passed": 3 if o == "passed" else 1, "tests_total": 3})
    tmp.mkdir(parents=True, exist_ok=True)
    s, r = tmp / "samples.jsonl", tmp / "results.jsonl"
    s.write_text("".join(json.dumps(x) + "\n" for x in samples))
    r.write_text("".join(json.dumps(x) + "\n" for x in results))
    return s, r


def train_all(out: str, model: str, samples: str, results: str, grad_accum: int) -> None:
    """The three runs, into ``out/<run>/``: SFT on 4 problems x 2 epochs, CodeRL RL (LoRA, KL to
    the adapters switched off, alternating RL and CE steps) on 2 problems, and SFT with a linear
    decay. Called by each launched process (grad_accum 1) and by the one-process reference
    (grad_accum 2): 4 + 4 + 4 optimizer steps either way."""
    out_dir = Path(out)
    problems = list(load_problems("mbpp", split="train", end=4))
    quiet = lambda *_: None  # noqa: E731
    sft = SFTConfig(model=model, epochs=2, grad_accum=grad_accum, **COMMON)
    train_sft(problems, out_dir / "sft", sft, echo=quiet)
    rl = RLConfig(init=model, epochs=1, grad_accum=grad_accum, ce_every=1, kl_coef=0.05, **COMMON)
    train_rl(problems[:2], out_dir / "rl", rl, samples_path=samples, results_path=results, echo=quiet)
    linear = SFTConfig(model=model, epochs=2, grad_accum=grad_accum, **{**COMMON, "lr_schedule": "linear"})
    train_sft(problems, out_dir / "sft_linear", linear, echo=quiet)
    # online RL: one problem's group a round = one micro-batch a step, fewer than the processes
    online = OnlineConfig(init=model, rounds=2, problems_per_round=1, group_size=2, max_new_tokens=8,
                          gen_batch_size=4, skip_equal=False, reward="test_accelerate_launch:_len_reward",
                          **{k: v for k, v in COMMON.items() if k != "batch_size"})
    train_online(problems[:2], RunDir(out_dir / "online").mkdir(), online, echo=quiet)


def _len_reward(problem, program, result):
    """Rewards that differ between two programs of a group (their length alone often ties)."""
    return float(sum(map(ord, program)) % 97)


LAUNCHED = """\
import json, sys
sys.path.insert(0, {tests!r})
from test_accelerate_launch import train_all

train_all(**json.loads(open(sys.argv[1]).read()))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _adapter(run_dir: Path, stage: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / stage / "adapter_model.safetensors"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_chat_dir):
    """({run: (one process's adapter, two processes' adapter)}, {run: the two processes' log
    records}, the launch's seconds)."""
    tmp = tmp_path_factory.mktemp("accelerate_launch")
    problems = list(load_problems("mbpp", split="train", end=2))
    s, r = _sample_files(tmp / "data", problems, load_model(str(tiny_chat_dir)).tokenizer)
    spec = dict(model=str(tiny_chat_dir), samples=str(s), results=str(r))

    script = tmp / "launched.py"
    script.write_text(LAUNCHED.format(tests=str(Path(__file__).resolve().parent)))
    (tmp / "spec.json").write_text(json.dumps({**spec, "out": str(tmp / "two"), "grad_accum": 1}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
           "ACCELERATE_USE_CPU": "true", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG),
           "--num_processes", "2", "--main_process_port", str(_free_port()), str(script), str(tmp / "spec.json")]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    seconds = time.time() - t0
    assert proc.returncode == 0, f"accelerate launch failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"

    train_all(out=str(tmp / "one"), grad_accum=2, **spec)  # the reference: one process, same global batch
    stages = {"sft": SFT_DIR, "rl": RL_DIR, "sft_linear": SFT_DIR, "online": "online"}
    out = {name: (_adapter(tmp / "one" / name, stages[name]), _adapter(tmp / "two" / name, stages[name]))
           for name in RUNS}
    logs = {name: [json.loads(l) for l in (tmp / "two" / name / stages[name] / "log.jsonl").read_text().splitlines()]
            for name in RUNS}
    return out, logs, seconds


@pytest.mark.parametrize("run", ["sft", "rl"])
def test_two_processes_end_with_the_weights_of_one(runs, run):
    adapters, logs, seconds = runs
    one, two = adapters[run]
    assert one.keys() == two.keys() and len(one) > 0
    start = logs[run][0]
    assert start["event"] == "start" and start["total_steps"] == 4
    kinds = [e["kind"] for e in logs[run] if e["event"] == "step"]
    assert kinds == (["ce"] * 4 if run == "sft" else ["rl", "ce", "rl", "ce"])
    # training moved the adapters (LoRA's B starts at 0) ...
    assert max(float(v.abs().max()) for k, v in two.items() if "lora_B" in k) > 1e-3
    # ... to the same place with one process or two
    print(f"{run}: max |one - two| = {_max_diff(one, two):.3g} (launch {seconds:.1f} s)")
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=ATOL, rtol=0, msg=lambda m, k=k: f"{run} {k}: {m}")


def test_online_rl_steps_with_fewer_micro_batches_than_processes_match_one_process(runs):
    """A round of one problem's group is one micro-batch: the second process has none, joins the
    all-reduce with nothing, and the update is one process's."""
    adapters, logs, _ = runs
    one, two = adapters["online"]
    assert [e["kind"] for e in logs["online"] if e["event"] == "step"] == ["rl", "rl"]
    assert max(float(v.abs().max()) for k, v in two.items() if "lora_B" in k) > 1e-4
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=ATOL, rtol=0)


def test_linear_schedule_with_two_processes_matches_one(runs):
    adapters, logs, _ = runs
    one, two = adapters["sft_linear"]
    lrs = [e["lr"] for e in logs["sft_linear"] if e["event"] == "step"]
    print(f"sft_linear: max |one - two| = {_max_diff(one, two):.3g}; two processes' lr after each step: {lrs}")
    assert lrs == pytest.approx([7.5e-3, 5e-3, 2.5e-3, 0.0])
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["cpu_2proc", "ddp", "zero2", "zero3", "fsdp"])
def test_the_accelerate_configs_are_what_accelerate_launch_reads(name, monkeypatch):
    """No GPU (nor DeepSpeed) here: the GPU configs are checked as ``accelerate launch`` reads
    them: known keys, the launcher they select, and the FSDP / DeepSpeed plugin built from the
    environment the launcher would give each process."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = CONFIGS / f"{name}.yaml"
    cfg = load_config_from_file(str(path))  # unknown top-level keys are an error here
    parser = launch_command_parser()
    options = {a.dest for a in parser._actions}
    for k in [*cfg.deepspeed_config, *cfg.fsdp_config]:
        assert k in options, f"{path}: {k} is not an accelerate launch option"
    args, defaults, _ = _validate_launch_command(parser.parse_args(["--config_file", str(path), "train.py"]))
    want = {"cpu_2proc": ("multi_gpu", "no"), "ddp": ("multi_gpu", "bf16"), "zero2": ("use_deepspeed", "fp16"),
            "zero3": ("use_deepspeed", "bf16"), "fsdp": ("use_fsdp", "bf16")}[name]
    assert getattr(args, want[0]) and args.mixed_precision == want[1]
    assert args.num_processes == 2 and args.num_machines == 1
    if args.use_fsdp:
        env = prepare_multi_gpu_env(args)
        for k, v in env.items():
            if k.startswith(("FSDP_", "ACCELERATE_")):
                monkeypatch.setenv(k, v)
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.state_dict_type.name == "FULL_STATE_DICT"
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join([*defaults.deepspeed_config, "mixed_precision"])
        _, env = prepare_deepspeed_cmd_env(args)
        for k, v in env.items():
            if k.startswith("ACCELERATE_"):
                monkeypatch.setenv(k, v)
        zero = DeepSpeedPlugin().deepspeed_config["zero_optimization"]
        assert zero["stage"] == (2 if name == "zero2" else 3)
        assert zero["offload_optimizer"]["device"] == ("cpu" if name == "zero2" else "none")
