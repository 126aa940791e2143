"""The ``train-online`` stage: online RL — rounds of sample -> execute -> reward -> update, the
policy sampling with its current weights (CodeRL's release is offline only; its users asked for
this, issue #26).

    summary = train_online(problems, RunDir(run_dir), OnlineConfig(rounds=8, group_size=4))

Round ``r`` (:class:`RolloutBatches`, the Trainer's :class:`~coderl.training.batches.BatchSource`):

1. ``problems_per_round`` train problems (a seeded order, cycling) x ``group_size`` programs
   sampled with the current weights (the project's batched generator; seed ``seed + 1000 r``),
   plus one greedy program each with ``advantage: coderl``;
2. executed in the sandbox (the run's ``execution`` settings); samples and results written to
   ``<run>/online/rounds/NNNNNN/`` as ordinary records (``coderl evaluate`` reads them) before
   anything else uses them, so a round is never drawn twice;
3. rewards (a plain callable: CodeRL's table, RLTF's partial credit, or the user's
   ``module:function``; a reward that raises or is not finite stops the run naming the problem and
   the round, the rounds written so far kept);
4. advantages per problem (:mod:`coderl.training.advantages`): CodeRL's relative return, the
   group mean (Dr. GRPO) or mean and std (GRPO); groups whose rewards are all equal are left out
   with ``skip_equal`` (counted);
5. ``steps_per_round`` optimizer steps of the policy-gradient loss on the round's programs (their
   own tokens, advantage-weighted), the round's groups split into that many mini-batches, one
   micro-batch per problem whose prompt runs once for its group
   (:mod:`coderl.training.shared_prefix`), with a KL term to the starting model (LoRA: the adapters
   switched off) when ``kl_coef`` > 0. With more than one step a round, the programs' log-
   probabilities under the sampling policy are computed before the round's first step (kept in
   the round's ``old_logprobs.json``, so a resumed run uses the same) and every step uses PPO's
   clipped importance ratio (equal to the plain loss at the first step, where the ratio is 1).

Validation (``val_source``; ``eval_every`` 0: after every round, a round being the run's epoch, and
at step 0): the loss on the validation problems' gold programs, laid out as the starting SFT box
was trained (its recorded ``gold_style``), and with ``val_pass_every`` a greedy pass@1 on the first
``val_pass_problems`` of them: the learning curve, in ``log.jsonl`` and TensorBoard. The last model
is published (``best_metric`` ``last``), or the round with the best pass@1 / loss.

Checkpoints are taken after every step (``save_every`` 1), so a killed run resumes at its step
and, reading the rounds already on disk, reaches the same weights. Per step ``log.jsonl`` and
TensorBoard have the loss, the mean advantage, the KL, the sampled tokens' negative log-likelihood
(an estimate of the policy's entropy) and the clipped share; ``rounds.jsonl`` (and TensorBoard's ``round/*``) per round the mean
reward, pass rate, outcome mix, groups left out, generated tokens/s and the seconds spent
generating and executing (``benchmarks/plot_training.py`` draws both).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import ConfigError, digest, fingerprint as config_fingerprint
from ..execution.codes import OUTCOMES, PASSED
from ..io import atomic_write_text
from ..models import load_model
from ..records import program_hash, read_results, read_samples
from ..rundir import RunDir
from .actor import adapter_base_spec, validation_set
from .advantages import advantages
from .batches import Step
from .data import TrainingError, build_rl_examples
from .online_config import NOT_FINGERPRINTED, OnlineConfig
from .options import recorded_gold_style
from .rewards import coderl_reward, pass_fail_reward, pass_ratio_reward
from . import objective
from .rl_trainer import RLTask, resolve_init

ROUNDS_DIR, ROUNDS_FILE, OLD_LOGPROBS = "rounds", "rounds.jsonl", "old_logprobs.json"


def _round_of(line: str) -> int | None:
    try:
        return json.loads(line).get("round")
    except ValueError:
        return None


def make_reward(spec: str):
    """The reward callable a config names."""
    if spec in ("coderl", "partial"):
        return coderl_reward(partial_credit=spec == "partial")
    if spec == "pass_fail":
        return pass_fail_reward()
    if spec == "pass_ratio":
        return pass_ratio_reward()
    mod, sep, name = spec.partition(":")
    if not sep:
        raise ConfigError(f"online.reward: {spec!r}: coderl, partial, pass_fail, pass_ratio or module:function")
    try:
        fn = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"online.reward: {spec!r} cannot be loaded ({e})") from None
    if not callable(fn):
        raise ConfigError(f"online.reward: {spec!r} is not callable")
    return fn


class OnlineTask(RLTask):
    """RLTask whose model the rollouts sample from (kept at build). A micro-batch is one problem's
    group, whose prompt runs once (RLTask's shared prefix); the loss step is RLTask's."""

    model: Any = None

    def build(self, accelerator):
        self.model = super().build(accelerator)
        return self.model

    def collate(self, kind: str, items: list) -> dict[str, Any]:
        batch = super().collate(kind, items)
        old = [getattr(e, "old_logprobs", None) for e in items]
        if all(o is not None for o in old):
            mask, t = batch["target_mask"], torch.zeros(batch["target_mask"].shape)
            for i, o in enumerate(old):
                t[i, mask[i]] = torch.tensor(o, dtype=t.dtype)
            batch["old_logprobs"] = t
        return batch

    def policy_loss(self, lp, batch: dict) -> tuple[Any, dict[str, float]]:
        """RLTask's ``L_rl``; a batch whose sampling policy's log-probabilities are known
        (``steps_per_round`` > 1) takes PPO's clipped ratio instead. Also the sampled tokens' mean
        negative log-likelihood under the sampling policy (an estimate of its entropy)."""
        mask = batch["target_mask"]
        old = batch.get("old_logprobs")
        n = mask.sum().clamp(min=1)
        if old is None:
            loss, stats = super().policy_loss(lp, batch)
            return loss, {**stats, "sample_nll": float(-(lp.detach() * mask).sum() / n)}
        loss, clipped = objective.clipped_pg_loss(lp, old, mask, batch["returns"], self.cfg.clip)
        return loss, {"return": float(batch["returns"].mean()), "clipped": float(clipped),
                      "sample_nll": float(-(old.to(lp.device) * mask).sum() / n)}

    def old_logprobs(self, groups: list[list]) -> list[list[float]]:
        """Each group's programs' token log-probabilities under the current weights (no gradient)."""
        from accelerate.utils import send_to_device

        model, out = self.model, []
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for items in groups:
                    batch = send_to_device(self.collate("rl", items), self.accelerator.device)
                    lp, mask = self.logprobs(model, batch).float().cpu(), batch["target_mask"].cpu()
                    out += [lp[i][mask[i]].tolist() for i in range(len(items))]
        finally:
            model.train(was_training)
        return out


class RolloutBatches:
    """``steps_per_round`` optimizer steps per round; the round's rollouts made (or read back)
    when its first step is asked for (see the module docstring)."""

    def __init__(self, problems: Sequence, run: RunDir, cfg: OnlineConfig, task: OnlineTask, lm, exec_config,
                 echo=print):
        self.problems, self.run, self.cfg, self.task, self.lm = list(problems), run, cfg, task, lm
        self.exec_config, self.echo = exec_config, echo
        self.reward = make_reward(cfg.reward)
        g = torch.Generator().manual_seed(cfg.seed)
        self.order = torch.randperm(len(self.problems), generator=g).tolist()
        self.group = 1
        self._round: tuple[int, list[list]] | None = None  # the round at hand and its groups
        self._ray_gen = None  # execution.backend ray: the policy's replicas in Ray actors

    # -- the BatchSource protocol -----------------------------------------------------------------
    def bind(self, group: int) -> None:
        self.group = group

    def __len__(self) -> int:
        return self.cfg.rounds * self.cfg.steps_per_round

    def ends_epoch(self, s: int) -> bool:
        """A round is an epoch: validation (``eval_every`` 0) after each round's last step."""
        return (s + 1) % self.cfg.steps_per_round == 0

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def step(self, s: int) -> Step:
        """One micro-batch per problem's group (its prompt shared), in the round's order; with
        ``steps_per_round`` k, step ``s`` takes every k-th group of round ``s // k`` from ``s % k``."""
        k = self.cfg.steps_per_round
        r, part = divmod(s, k)
        if self._round is None or self._round[0] != r:
            groups: dict[str, list] = {}
            for e in self.round_examples(r):
                groups.setdefault(e.problem_id, []).append(e)
            self._round = (r, list(groups.values()))
            if k > 1:
                self.attach_old_logprobs(r, self._round[1])
        mine = self._round[1][part::k]  # fewer informative groups than steps: a zero-return step
        return Step("rl", mine or [[dataclasses.replace(self._round[1][0][0], ret=0.0)]])

    def attach_old_logprobs(self, r: int, groups: list[list]) -> None:
        """The sampling policy's log-probabilities on each example (``old_logprobs``): computed at
        the round's first step and kept in the round's directory, read back on a resume."""
        path = self.round_dir(r) / OLD_LOGPROBS
        keys = [f"{e.problem_id}|{e.index}" for g in groups for e in g]
        known = json.loads(path.read_text()) if path.is_file() else {}
        if not all(k in known for k in keys):
            known = dict(zip(keys, self.task.old_logprobs(groups)))
            if self.task.accelerator is None or self.task.accelerator.is_main_process:
                atomic_write_text(path, json.dumps(known))
        for g in groups:
            for e in g:
                e.old_logprobs = known[f"{e.problem_id}|{e.index}"]

    # -- a round ------------------------------------------------------------------------------------
    def round_dir(self, r: int) -> Path:
        return self.run.online / ROUNDS_DIR / f"{r:06d}"

    def round_problems(self, r: int) -> list:
        n, k = len(self.problems), min(self.cfg.problems_per_round, len(self.problems))
        return [self.problems[self.order[(r * k + i) % n]] for i in range(k)]

    def round_examples(self, r: int) -> list:
        d = self.round_dir(r)
        problems = self.round_problems(r)
        stats: dict[str, Any] = {"round": r}
        acc = self.task.accelerator
        main = acc is None or acc.is_main_process
        if not (d / "results.jsonl").is_file():
            if main:  # several processes (accelerate): the main one samples and executes the round
                stats.update(self.rollout(r, problems, d))
            if acc is not None:
                acc.wait_for_everyone()
        examples, counts = self.examples(r, problems, d)
        stats.update(counts)
        if main:
            path = self.run.online / ROUNDS_FILE  # one line per round (a resumed round is not listed twice)
            lines = [l for l in (path.read_text().splitlines() if path.is_file() else []) if l.strip()]
            kept = [l for l in lines if _round_of(l) != r]
            for l in lines:  # a resumed round keeps the timings its rollout logged (not measured again)
                if _round_of(l) == r:
                    stats.update({k: v for k, v in json.loads(l).items() if k not in stats})
            atomic_write_text(path, "".join(l + "\n" for l in kept) + json.dumps(stats) + "\n")
            self.log_round(stats)
        return examples

    def log_round(self, stats: dict[str, Any]) -> None:
        """The round's line of ``rounds.jsonl`` in TensorBoard too (``round/*``, x: the round), beside
        the Trainer's per-step scalars in the box's ``tb/``."""
        from torch.utils.tensorboard import SummaryWriter

        from .engine import TB_DIR

        mix = stats.get("outcomes") or {}
        n = max(1, sum(mix.values()))
        scalars = {k: stats[k] for k in ("mean_reward", "pass_rate", "generate_s", "execute_s",
                                          "generate_tokens_per_s", "groups_all_equal") if k in stats}
        scalars.update({f"share_{o}": v / n for o, v in mix.items()})
        with SummaryWriter(str(self.run.online / TB_DIR), filename_suffix=".rounds") as tb:
            for k, v in scalars.items():
                tb.add_scalar(f"round/{k}", v, stats["round"])

    def rollout(self, r: int, problems: list, d: Path) -> dict[str, Any]:
        """Sample and execute round ``r``; its records written under ``d`` (whole, atomically)."""
        from ..distributed import make_executor
        from ..generation.core import GenRequest, generate_samples
        from ..generation.generation_config import GenerationConfig

        cfg, G = self.cfg, self.cfg.group_size
        reqs = []
        for p in problems:
            reqs += [GenRequest(p, r * (G + 1) + j, meta={"round": r}) for j in range(G)]
            if cfg.advantage == "coderl":
                reqs.append(GenRequest(p, r * (G + 1) + G, "greedy", meta={"round": r}))
        gcfg = GenerationConfig(model=self.lm.spec, temperature=cfg.temperature, top_p=cfg.top_p,
                                max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + 1000 * r,
                                batch_size=cfg.gen_batch_size, prompt_style=cfg.prompt_style,
                                max_prompt_tokens=cfg.max_prompt_tokens, progress=False)
        model = self.task.model
        was_training = model.training
        model.eval()
        t0 = time.time()
        try:
            if self.exec_config.backend == "ray":
                samples = self.ray_generator().generate(reqs, gcfg)
            else:
                with torch.no_grad():
                    samples = generate_samples(dataclasses.replace(self.lm, model=model), reqs, gcfg)
        finally:
            model.train(was_training)
        t1 = time.time()
        by_id = {p.id: p for p in problems}
        with make_executor(self.exec_config) as ex:
            res = ex.run_many([(by_id[s.problem_id], s.program, "hidden") for s in samples])
        results = []
        for s, x in zip(samples, res):
            dct = x.to_dict()
            dct.update(index=s.index, origin=s.origin, program_hash=program_hash(s.program))
            results.append(dct)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "samples.jsonl", "".join(json.dumps(s.to_dict()) + "\n" for s in samples))
        atomic_write_text(d / "results.jsonl", "".join(json.dumps(x) + "\n" for x in results))
        ntok = sum(s.num_tokens for s in samples)
        return {"generate_s": round(t1 - t0, 2), "execute_s": round(time.time() - t1, 2),
                "generated_tokens": ntok, "generate_tokens_per_s": round(ntok / max(t1 - t0, 1e-9), 1)}

    def ray_generator(self):
        """The policy's replicas on Ray (started at the first round: the model the trainer started
        from, its LoRA config applied), with the policy's current trainable weights sent."""
        from ..distributed.ray_generator import RayGenerator

        acc = self.task.accelerator
        policy = acc.unwrap_model(self.task.model) if acc is not None else self.task.model
        if self._ray_gen is None:
            ec = self.exec_config
            peft = getattr(policy, "peft_config", {}).get("default")
            self._ray_gen = RayGenerator(self.lm.spec, actors=ec.ray_actors, address=ec.ray_address,
                                         device=next(policy.parameters()).device.type, peft_config=peft,
                                         threads=self.cfg.threads, section="execution")
            self._ray_gen.start()
        self._ray_gen.set_weights({n: p for n, p in policy.named_parameters() if p.requires_grad})
        return self._ray_gen

    def close(self) -> None:
        if self._ray_gen is not None:
            self._ray_gen.close()
            self._ray_gen = None

    def examples(self, r: int, problems: list, d: Path) -> tuple[list, dict[str, Any]]:
        """The round's sampled programs as RL examples with their advantages, and statistics."""
        cfg = self.cfg
        results = {(x["problem_id"], x["index"]): x for x in read_results(d / "results.jsonl")}
        samples = read_samples(d / "samples.jsonl")
        by_id = {p.id: p for p in problems}
        rewards = {}
        for s in samples:
            try:
                v = float(self.reward(by_id[s.problem_id], s.program, results[s.key]))
            except Exception as e:  # noqa: BLE001 - a user's reward: name where it failed
                raise TrainingError(f"online.reward {cfg.reward!r} raised {type(e).__name__}: {e} on problem "
                                    f"{s.problem_id!r} (index {s.index}) in round {r}; the rounds before are "
                                    f"kept in {self.run.online / ROUNDS_DIR}") from None
            if not math.isfinite(v):
                raise TrainingError(f"online.reward {cfg.reward!r} returned {v} on problem {s.problem_id!r} "
                                    f"(index {s.index}) in round {r}; the rounds before are kept")
            rewards[s.key] = v
        adv, skipped = {}, 0
        for p in problems:
            group = [s for s in samples if s.problem_id == p.id and s.origin == "sampled"]
            greedy = next((rewards[s.key] for s in samples if s.problem_id == p.id and s.origin == "greedy"), None)
            a, equal = advantages([rewards[s.key] for s in group], cfg.advantage, greedy_reward=greedy)
            skipped += equal
            if equal and cfg.skip_equal:
                continue
            adv.update({s.key: v for s, v in zip(group, a)})
        data = build_rl_examples(problems, d / "samples.jsonl", d / "results.jsonl", self.lm.tokenizer,
                                 self.lm.is_encoder_decoder, reward=lambda *a: 0.0, relative=False,
                                 skip_zero_return=False, prompt_style=cfg.prompt_style,
                                 max_prompt_tokens=cfg.max_prompt_tokens, max_target_tokens=cfg.max_target_tokens)
        by_key = {(e.problem_id, e.index): e for e in data.examples}
        out = []
        for key, a in adv.items():
            e = by_key.get(key)
            if e is not None:
                e.ret, e.reward = a, rewards[key]
                out.append(e)
        if not out:  # nothing informative: a zero-advantage step keeps the schedule (no gradient)
            e = next(iter(by_key.values()))
            e.ret = 0.0
            out = [e]
        sampled = [s for s in samples if s.origin == "sampled"]
        mix = Counter(results[s.key]["outcome"] for s in sampled)
        return out, {"mean_reward": round(sum(rewards[s.key] for s in sampled) / len(sampled), 4),
                     "pass_rate": round(mix.get(PASSED, 0) / len(sampled), 4),
                     "outcomes": {o: mix.get(o, 0) for o in OUTCOMES}, "groups_all_equal": skipped,
                     "examples": len(out)}


def train_online(problems: Sequence, run: RunDir, cfg: OnlineConfig, *, progress: bool = True, echo=print,
                 exec_config=None, on_step=None) -> dict[str, Any]:
    from ..execution.exec_config import ExecConfig

    problems = [p for p in problems if p.num_tests]
    if not problems:
        raise TrainingError("coderl train-online: none of the selected problems has tests to reward programs with")
    init = resolve_init(cfg.init, run.root)
    lm = load_model(init)
    out = run.online
    out.mkdir(parents=True, exist_ok=True)
    fp = {"config": config_fingerprint(cfg, exclude=NOT_FINGERPRINTED),
          "init": cfg.init if cfg.init in RunDir.MODELS else init,
          "problems": digest({"problems": sorted(p.id for p in problems)})}
    exec_config = exec_config or ExecConfig()
    settings = dataclasses.replace(cfg, save_every=1)
    style = recorded_gold_style(init) or "raw"  # validation's gold programs laid out as the init SFT's
    val_problems, val_examples, _ = validation_set(problems, cfg, lm, None, style=style)
    task = OnlineTask(name="train-online", out=out, cfg=settings, lm=lm, base_spec=adapter_base_spec(init, out),
                      val_examples=val_examples, val_problems=val_problems,
                      data_info={"init": init, "problems": len(problems), "validation_problems": len(val_problems),
                                 "validation_gold_style": style},
                      needs_reference=cfg.kl_coef > 0 or cfg.measure_kl, exec_config=exec_config)
    source = RolloutBatches(problems, run, cfg, task, lm, exec_config, echo)
    try:
        return task.train(source, fp, [], progress=progress, on_step=on_step, echo=echo)
    finally:
        source.close()


def reads(cfg: OnlineConfig) -> tuple[str, ...]:
    return (cfg.init,) if cfg.init in RunDir.MODELS else ()


def run(problems: Sequence, run: RunDir, cfg: OnlineConfig, ctx) -> dict[str, Any]:
    """The stage contract (:mod:`coderl.stage`): the train problems -> ``run.online``."""
    return train_online(list(problems), run, cfg, progress=cfg.progress and ctx.progress, echo=ctx.echo,
                        exec_config=ctx.execution)
