"""Training examples for the actor: (prompt tokens, target tokens, per-token weights, return),
reproducing exactly what generation sees and writes:

* the **input** is :func:`coderl.models.build_prompt`'s text, tokenized as generation does (too
  long: the end is kept);
* the **target** of a gold program (SFT, RL's CE steps) is its continuation after the prompt's
  ``prefix`` plus what ends it at generation (the closing fence, ``[DONE]`` for MBPP's plain
  prompt, else the end-of-sequence token), so the model learns to stop;
* the **target** of a sampled program (RL) is the model's own ``Sample.raw`` plus the end token
  when it ended with one; returns and token weights are :mod:`coderl.training.objective`'s.

Gold programs that do not start with the pre-filled ``def <entry_point>(`` (MBPP: 103 of 374)
are trained with the code before the function moved after it (``gold_reorder``), or skipped.
``shapes=("native", "humaneval")`` adds HumanEval's prompt shape of each function-writing gold
program (:func:`humaneval_shape`), so that SFT on MBPP does not teach one prompt format only.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import json
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..io import RecordError
from ..models.extract import parses
from ..models.prompts import FENCE, Prompt, build_prompt
from ..records import join
from .options import GOLD_STYLES
from .objective import align_weights, greedy_baselines, mean_baselines, relative_return


class TrainingError(RuntimeError):
    """Training cannot go on (bad input, NaN loss, a mismatched checkpoint); says what to do."""


@dataclass
class Example:
    """One program to train on, tokenized."""

    problem_id: str
    index: int                    # the sample's index, or the gold solution's position
    kind: str                     # gold | sample
    prompt_ids: list[int]
    target_ids: list[int]
    weights: list[float] | None = None   # q̂ per target token (None: 1)
    ret: float = 0.0              # the return (RL), r(W^s) - r(W^b)
    reward: float | None = None
    baseline: float | None = None
    outcome: str | None = None
    origin: str = "gold"

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.target_ids)

    def summary(self) -> dict[str, Any]:
        d = {"problem_id": self.problem_id, "index": self.index, "kind": self.kind, "origin": self.origin,
             "prompt_tokens": len(self.prompt_ids), "target_tokens": len(self.target_ids)}
        if self.kind == "sample":
            d.update(outcome=self.outcome, reward=self.reward, baseline=self.baseline, ret=round(self.ret, 6),
                     q_hat_mean=(round(float(np.mean(self.weights)), 4) if self.weights else 1.0))
        return d


# -- prompts and targets ------------------------------------------------------------------------

def encode_prompt(tokenizer, text: str, is_encoder_decoder: bool, max_prompt_tokens: int) -> list[int]:
    """The prompt's token ids exactly as generation computes them (same tokenizer call)."""
    return list(tokenizer(text, add_special_tokens=is_encoder_decoder, truncation=True,
                          max_length=max_prompt_tokens).input_ids)


def end_of_program(prompt: Prompt, is_encoder_decoder: bool) -> tuple[str, bool]:
    """(text that ends a program at generation, whether the end-of-sequence token follows)."""
    if is_encoder_decoder:
        return "", True
    if prompt.fenced:
        return FENCE, False
    if "[DONE]" in prompt.stop:
        return "[DONE]", False
    return "", True


def _normalise(code: str) -> str:
    return code.replace("\r\n", "\n").replace("\r", "\n")


def gold_continuation(problem, prompt: Prompt, solution: str, reorder: bool = True) -> str | None:
    """What the model writes after ``prompt`` for ``solution`` (None: the prefix cannot start it)."""
    sol = _normalise(solution)
    prefix = prompt.prefix
    if not prefix:
        return sol.strip("\n") + "\n"
    stripped = sol.lstrip("\n")
    if stripped.startswith(prefix):
        return stripped[len(prefix):].rstrip() + "\n"
    if not reorder or not problem.entry_point:
        return None
    m = re.search(rf"^def {re.escape(problem.entry_point)}\(", sol, re.M)
    if m is None or prefix != f"def {problem.entry_point}(":
        return None
    head, rest = sol[:m.start()].strip("\n"), sol[m.end():].rstrip()
    cont = rest + "\n\n\n" + head + "\n"
    return cont if parses(prefix + cont) else None


def normalized_gold(solution: str) -> str | None:
    """``solution`` laid out as ``ast.unparse`` writes it: 4-space indentation, no redundant parentheses,
    no space before a colon, no comments; the same program (None: it does not parse)."""
    try:
        with warnings.catch_warnings():   # MBPP's invalid escapes ("\d") warn
            warnings.simplefilter("ignore")
            return ast.unparse(ast.parse(_normalise(solution))) + "\n"
    except (SyntaxError, ValueError, RecursionError):
        return None


def encode_target(tokenizer, text: str, add_eos: bool, max_target_tokens: int) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=False).input_ids) if text else []
    if add_eos and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return ids[:max_target_tokens]


SHAPES = ("native", "humaneval")
SHAPE_INDEX = 100_000  # a HumanEval-shaped example's index: this plus the gold program's position


def humaneval_shape(problem, solution: str):
    """``problem`` as HumanEval poses it, from a gold program: imports, signature and a docstring (the
    task, the first assert as ``>>>``). None unless only imports precede ``def <entry_point>``."""
    if problem.kind != "assert" or not problem.entry_point or problem.source == "humaneval":
        return None
    sol = _normalise(solution)
    # the signature's line as written: `def f(x):`, `def f(x) :`, `def f(x) -> int:`, a comment after it
    m = re.search(rf"^def {re.escape(problem.entry_point)}\(.*\)[^:\n#]*:[ \t]*(#.*)?$", sol, re.M)
    if m is None:
        return None
    head = [l for l in sol[:m.start()].splitlines() if l.strip()]
    if any(not re.match(r"(import|from)\s", l) for l in head):
        return None
    doc = " ".join(problem.question.split())
    asserts = (problem.example_tests or {}).get("asserts") or problem.tests.get("asserts") or []
    with contextlib.suppress(SyntaxError, ValueError, IndexError):
        test = ast.parse(asserts[0].strip()).body[0]  # no assert: IndexError, suppressed
        if isinstance(test, ast.Assert) and isinstance(test.test, ast.Compare) and \
                isinstance(test.test.ops[0], ast.Eq):
            doc += f"\n    >>> {ast.unparse(test.test.left)}\n    {ast.unparse(test.test.comparators[0])}"
    body = sol[m.end() + 1:]
    first = next((l for l in body.splitlines() if l.strip()), "")
    ind = first[:len(first) - len(first.lstrip())] or "    "  # the docstring is indented as the body
    doc = doc.replace("\n    ", "\n" + ind)
    code = "".join(l + "\n" for l in head) + ("\n" if head else "") + m.group(0) + f'\n{ind}""" {doc}\n{ind}"""\n'
    if not parses(code + body):
        return None
    return dataclasses.replace(problem, source="humaneval", prompt=code, solutions=[solution],
                               meta={**problem.meta, "shape": "humaneval", "body": body})


def build_gold_examples(problems: Sequence, tokenizer, is_encoder_decoder: bool, *,
                        prompt_style: str = "auto", max_prompt_tokens: int = 1024, max_target_tokens: int = 512,
                        max_solutions: int = 0, reorder: bool = True, shapes: Sequence[str] = ("native",),
                        style: str = "raw") -> tuple[list[Example], dict[str, Any]]:
    """Examples from the gold programs of ``problems`` in each prompt shape of ``shapes``; counts.
    ``style="normalized"``: each gold program as :func:`normalized_gold` lays it out (kept as written
    where it does not parse, or where the prompt pre-fills a prefix in the raw layout)."""
    if style not in GOLD_STYLES:
        raise ValueError(f"gold style {style!r}: one of {list(GOLD_STYLES)}")
    out, counts, extra, hcounts = [], Counter(), [], Counter()
    native = "native" in shapes or "humaneval" not in shapes
    for p in problems:
        sols = [s for s in (p.solutions or []) if isinstance(s, str) and s.strip()][:max_solutions or None]
        raws = sols
        if style == "normalized":
            norm = [normalized_gold(s) for s in sols]
            counts["normalized"] += sum(n is not None for n in norm)
            counts["normalize_failed"] += sum(n is None for n in norm)
            sols = [n or s for n, s in zip(norm, sols)]
        for i, sol in enumerate(sols if "humaneval" in shapes else []):
            hp = humaneval_shape(p, sol)
            if hp is None:
                hcounts["skipped_shape"] += 1
                continue
            prompt = build_prompt(hp, tokenizer, prompt_style, is_encoder_decoder)
            # a chat prompt asks for the whole function; a plain one for the body after the docstring
            body = hp.meta["body"].rstrip()
            cont = gold_continuation(hp, prompt, sol, False) if not prompt.prefix else (body + "\n" if body else None)
            if cont is None:
                hcounts["skipped_prefix_mismatch"] += 1
                continue
            end, eos = end_of_program(prompt, is_encoder_decoder)
            extra.append(Example(p.id, SHAPE_INDEX + i, "gold",
                                 encode_prompt(tokenizer, prompt.text, is_encoder_decoder, max_prompt_tokens),
                                 encode_target(tokenizer, cont + end, eos, max_target_tokens), origin="gold-humaneval"))
        if not native:
            continue
        if not sols:
            counts["problems_without_gold"] += 1
            continue
        prompt = build_prompt(p, tokenizer, prompt_style, is_encoder_decoder)
        pids = encode_prompt(tokenizer, prompt.text, is_encoder_decoder, max_prompt_tokens)
        end, eos = end_of_program(prompt, is_encoder_decoder)
        for i, sol in enumerate(sols):
            cont = gold_continuation(p, prompt, sol, reorder)
            if cont is None and sol != raws[i]:   # a pre-filled prefix written in the raw layout (APPS starter code)
                cont, sol = gold_continuation(p, prompt, raws[i], reorder), raws[i]
                counts["normalize_prefix_fallback"] += cont is not None
            if cont is None:
                counts["skipped_prefix_mismatch"] += 1
                continue
            if prompt.prefix and not _normalise(sol).lstrip("\n").startswith(prompt.prefix):
                counts["reordered"] += 1
            tids = encode_target(tokenizer, cont + end, eos, max_target_tokens)
            if len(tids) == max_target_tokens:
                counts["truncated"] += 1
            out.append(Example(p.id, i, "gold", pids, tids))
    hcounts["examples"] = len(extra)
    if not native:
        return extra, {**hcounts, **{k: v for k, v in counts.items() if k.startswith("normalize")}}
    if "humaneval" in shapes:
        out += extra
        counts.update({f"humaneval_{k}": v for k, v in hcounts.items()})
    counts["examples"] = len(out)
    counts["problems"] = len({e.problem_id for e in out})
    return out, dict(counts)


# -- RL examples ---------------------------------------------------------------------------------

@dataclass
class RLData:
    examples: list[Example]
    stats: dict[str, Any] = field(default_factory=dict)


def check_tokenizer(samples: Sequence, tokenizer, samples_path: str | Path) -> None:
    """Samples written by a model with another tokenizer (their token counts differ) are an error."""
    diffs = []
    for s in samples:
        n = getattr(s, "num_tokens", 0) or 0
        if n >= 8 and s.finish == "stop" and s.raw:
            m = len(tokenizer(s.raw, add_special_tokens=False)["input_ids"])
            diffs.append(abs(m - n) / n)
            if len(diffs) >= 50:
                break
    median = sorted(diffs)[len(diffs) // 2] if len(diffs) >= 5 else 0.0
    if median > 0.2:
        raise TrainingError(f"{samples_path}: its samples were written by a model with another tokenizer (their "
                            f"raw texts take {median:.0%} more or fewer tokens with this "
                            "model's tokenizer than the generator counted): train on samples of the model "
                            "being trained (generate them with its init model)")


def build_rl_examples(problems: Sequence, samples_path: str | Path, results_path: str | Path,
                      tokenizer, is_encoder_decoder: bool, *, reward: Callable,
                      scores: Mapping | None = None, origins: Sequence[str] = ("sampled",),
                      relative: bool = True, skip_zero_return: bool = True, baseline_kind: str = "greedy",
                      prompt_style: str = "auto", max_prompt_tokens: int = 1024,
                      max_target_tokens: int = 512, program_hash: Callable[[str], str] | None = None) -> RLData:
    """RL examples from samples + results (+ critic ``scores`` by key; None: q̂ = 1); the return's
    baseline: the problem's greedy program's reward, or (``baseline_kind="mean"``) its samples' mean."""
    by_id = {str(p.id): p for p in problems}
    pairs = join(samples_path, results_path, by_id)  # every result checked to be its sample's program's
    samples = [s for s, _ in pairs]
    results = {s.key: r for s, r in pairs}
    if not samples:
        raise RecordError(samples_path, None, "no samples of the selected problems")
    check_tokenizer(samples, tokenizer, samples_path)
    rewards = _rewards(samples, results, by_id, reward, results_path)
    baseline = mean_baselines(samples, rewards, origins) if baseline_kind == "mean" else \
        greedy_baselines(samples, rewards)

    prompts, prompt_ids, out, counts = {}, {}, [], Counter()
    for s in samples:
        counts[f"origin_{s.origin}"] += 1
        if s.origin not in origins:
            continue
        p = by_id[s.problem_id]
        if s.problem_id not in prompts:
            prompts[s.problem_id] = build_prompt(p, tokenizer, prompt_style, is_encoder_decoder)
        prompt = prompts[s.problem_id]
        if s.prompt and s.prompt != prompt.text:
            raise TrainingError(
                f"{samples_path}: sample (problem_id={s.problem_id!r}, index={s.index}) was generated "
                f"from another prompt than the one this model builds (prompt style {prompt_style!r}): "
                "the samples must come from the model being trained (generate them with rl.init's "
                "model and the same prompt style)")
        b = baseline.get(s.problem_id)
        ret = relative_return(rewards[s.key], b, relative)
        if b is None:
            counts["without_baseline"] += 1
        if skip_zero_return and ret == 0.0:
            counts["skipped_zero_return"] += 1
            continue
        text = s.prompt or prompt.text
        if text not in prompt_ids:
            prompt_ids[text] = encode_prompt(tokenizer, text, is_encoder_decoder, max_prompt_tokens)
        raw, enc, tids = _trajectory(s, p, prompt, tokenizer, is_encoder_decoder, counts)
        if not tids:
            counts["skipped_empty"] += 1
            continue
        tids = tids[:max_target_tokens]
        weights = None
        if scores is not None:
            q, offsets = _critic_values(s, scores.get(s.key), results[s.key]["outcome"], program_hash, samples_path)
            offs = list(enc.offset_mapping) if enc is not None else []
            weights = align_weights(raw, offs, s.program, q, offsets, len(tids))
        out.append(Example(s.problem_id, s.index, "sample", prompt_ids[text], tids, weights, ret,
                           rewards[s.key], b, results[s.key]["outcome"], s.origin))
    rets = [e.ret for e in out]
    return RLData(out, {**dict(counts), "examples": len(out), "problems": len({e.problem_id for e in out}),
                        "outcomes": dict(Counter(e.outcome for e in out)),
                        "mean_reward": round(float(np.mean([e.reward for e in out])), 6) if out else None,
                        "mean_return": round(float(np.mean(rets)), 6) if out else None,
                        "positive_returns": sum(r > 0 for r in rets), "negative_returns": sum(r < 0 for r in rets),
                        "q_hat": "ones" if scores is None else "critic"})


def _rewards(samples: Sequence, results: Mapping, by_id: Mapping, reward: Callable,
             results_path) -> dict[tuple[str, int], float]:
    """``r(W)`` of every sample (a non-finite reward is an error naming the sample)."""
    rewards = {}
    for s in samples:
        r = float(reward(by_id[s.problem_id], s.program, results[s.key]))
        if not math.isfinite(r):
            raise TrainingError(f"{results_path}: the reward of (problem_id={s.problem_id!r}, index={s.index}) is {r}")
        rewards[s.key] = r
    return rewards


def _trajectory(s, problem, prompt: Prompt, tokenizer, is_encoder_decoder: bool, counts: Counter):
    """(sampled text, its tokenization or None, target ids); a hand-made program is rebuilt."""
    add_eos = s.finish == "eos"
    if s.raw or s.finish:
        raw = s.raw
    else:
        counts["rebuilt_from_program"] += 1
        raw = gold_continuation(problem, prompt, s.program, True) or s.program
        end, add_eos = end_of_program(prompt, is_encoder_decoder)
        raw += end
    enc = tokenizer(raw, add_special_tokens=False, return_offsets_mapping=True) if raw else None
    tids = list(enc.input_ids) if enc is not None else []
    if add_eos and tokenizer.eos_token_id is not None:
        tids.append(int(tokenizer.eos_token_id))
    return raw, enc, tids


def _critic_values(s, sc, outcome: str, program_hash: Callable[[str], str] | None,
                   samples_path) -> tuple[np.ndarray, np.ndarray]:
    """The critic's q̂ of ``s``'s actual outcome per program token, and the tokens' spans."""
    where = f"(problem_id={s.problem_id!r}, index={s.index})"
    if sc is None:
        raise RecordError(samples_path, None, f"sample {where} has no critic scores; score the samples "
                          "again (coderl critic-score) or train with critic_weights=false")
    if program_hash is not None and getattr(sc, "program_hash", "") and sc.program_hash != program_hash(s.program):
        raise RecordError(samples_path, None, f"the critic scores of {where} are of another program "
                          "(stale scores): score the samples again")
    if getattr(sc, "outcome", None) not in (None, outcome):
        raise RecordError(samples_path, None, f"the critic scores of {where} are for outcome {sc.outcome!r} "
                          f"but its result is {outcome!r} (stale scores): score the samples again")
    q = np.asarray(sc.q_outcome, dtype=np.float64)
    if len(q) and not np.isfinite(q).all():
        raise RecordError(samples_path, None, f"the critic scores of {where} have no q̂ of the actual "
                          "outcome (scored before execution?): score them again")
    return q, np.asarray(sc.offsets)


def examples_digest(examples: Sequence[Example]) -> str:
    """A hash of what training reads (a rerun with other data is refused)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.problem_id, e.index, e.kind, e.prompt_ids, e.target_ids,
                             None if e.weights is None else [round(w, 4) for w in e.weights],
                             round(e.ret, 6)]).encode())
    return h.hexdigest()[:16]
