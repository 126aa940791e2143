"""coderl's execution reward for other trainers: TRL's reward functions and veRL's ``compute_score``
(usage with ``GRPOTrainer`` and veRL's ``custom_reward_function``: README.md).

Programs are extracted from the model's text as coderl's pipeline does and run in coderl's
sandbox, in this process or on a ``coderl serve-executor`` (``url=``, ``token=``). Rewards:
CodeRL's table (``"coderl"``), RLTF's partial credit (``"rltf"``), ``"pass_fail"`` (1 / 0),
``"pass_ratio"`` (the share of tests passed), a
:class:`coderl.execution.Rewards`, or any ``Result -> float`` callable. Only absolute imports, so
loading the module by file path (older veRL) works too.

``ground_truth`` is one of: a JSON object (or dict) of coderl test fields — ``kind`` and ``tests``
required, ``entry_point``, ``prompt`` (HumanEval: the prompt the answer completes), ``source``
(``apps``: CodeRL's import block), ``id``, ``example_tests`` optional; SandboxFusion's own
``{"inputs": [...], "outputs": [...]}`` (stdin/stdout; with ``fn_name`` and argument lists: a call
problem, APPS's encoding); or a problem id (``"mbpp/11"``) with ``reward_kwargs.problems`` (or
``extra_info["problems"]``) naming the coderl problem set it is in (``mbpp``, ``humaneval``, a path).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable
from typing import Any, Callable

from coderl.execution.exec_config import ExecConfig
from coderl.execution.outcome import RUNTIME_ERROR, Result, Rewards, pass_fail, pass_ratio
from coderl.models.extract import extract_program
from coderl.models.prompts import FENCE, Prompt, chat_message, chat_prompt, plain_prompt
from coderl.problems.schema import Problem, ProblemError

log = logging.getLogger(__name__)

PROMPT_STYLES = ("conversational", "plain", "chat")
REWARDS = ("coderl", "rltf", "pass_fail", "pass_ratio")
#: the Problem fields a veRL ground truth carries
GROUND_TRUTH_FIELDS = ("id", "source", "kind", "tests", "entry_point", "prompt", "starter_code")


# -- reward tables --------------------------------------------------------------------------------
def reward_table(reward: str | Rewards | Callable[[Result], float]) -> Callable[[Result], float]:
    """``Result -> float`` for a reward name (``REWARDS``), a ``Rewards`` or a callable."""
    if isinstance(reward, Rewards):
        return reward.reward
    if callable(reward):
        return reward
    tables = {"coderl": Rewards().reward, "rltf": Rewards(partial_credit=True).reward, "pass_fail": pass_fail,
              "pass_ratio": pass_ratio}
    if isinstance(reward, str) and reward in tables:
        return tables[reward]
    raise ValueError(f"reward {reward!r}: expected one of {REWARDS}, a coderl.execution.Rewards or a callable")


# -- prompts and extraction -----------------------------------------------------------------------
def trl_prompt(problem: Problem, prompt_style: str = "conversational", tokenizer: Any = None) -> Any:
    """A TRL row's ``prompt``: user messages, the source's own text, or the chat template."""
    if prompt_style == "conversational":
        return [{"role": "user", "content": chat_message(problem)[0]}]
    if prompt_style == "plain":
        return plain_prompt(problem).text
    if prompt_style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt_style 'chat' needs a tokenizer with a chat template (tokenizer=...)")
        return chat_prompt(problem, tokenizer).text
    raise ValueError(f"prompt_style {prompt_style!r}: expected one of {PROMPT_STYLES}")


def extraction_prompt(problem: Problem, prompt_style: str) -> Prompt:
    """What ``extract_program`` needs to know of the prompt a completion answered."""
    if prompt_style == "plain":
        return plain_prompt(problem)
    if prompt_style == "chat":  # the completion continues inside an opened fence
        return Prompt(text="", prefix=chat_message(problem)[1], stop=[FENCE], style="chat", fenced=True)
    return Prompt(text="", style="chat")  # free text: the code is found in it


def completion_text(completion: Any) -> str:
    """A completion's text: the string, or the assistant messages of a conversational one."""
    if isinstance(completion, str):
        return completion
    messages = [completion] if isinstance(completion, dict) else list(completion or [])
    parts = []
    for m in messages:
        if isinstance(m, dict) and m.get("role", "assistant") == "assistant":
            content = m.get("content")
            if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(content if isinstance(content, str) else "")
    return "".join(parts)


def detect_style(problem: Problem, prompt: Any, completion: Any) -> str:
    """conversational for message lists; chat when the prompt ends in an opened fence; else plain."""
    if not isinstance(completion, str):
        return "conversational"
    if isinstance(prompt, str) and prompt.endswith(f"{FENCE}python\n" + chat_message(problem)[1]):
        return "chat"
    return "plain"


# -- TRL ------------------------------------------------------------------------------------------
def _problem_map(problems: Iterable[Problem] | str) -> dict[str, Problem]:
    if isinstance(problems, str):
        from coderl.problems import load_problems

        problems = load_problems(problems)
    out = {str(p.id): p for p in problems}
    if not out:
        raise ValueError("no problems given: the reward needs the problems the dataset's rows name")
    return out


class TRLReward:
    """TRL's reward function: ``(prompts, completions, completion_ids, **columns) -> list[float |
    None]`` (None: unknown problem, engine or service failure). Picklable; built by :func:`for_trl`."""

    def __init__(self, problems: dict[str, Problem], scorer: Any, reward: Any = "coderl",
                 tests: str = "hidden", id_column: str = "problem_id", prompt_style: str = "auto"):
        if prompt_style not in ("auto",) + PROMPT_STYLES:
            raise ValueError(f"prompt_style {prompt_style!r}: expected auto or one of {PROMPT_STYLES}")
        if tests not in ("hidden", "example"):
            raise ValueError(f"tests {tests!r}: expected 'hidden' or 'example'")
        self.problems, self.scorer, self.reward = problems, scorer, reward
        self.tests, self.id_column, self.prompt_style = tests, id_column, prompt_style
        self.table = reward_table(reward)
        self.__name__ = "coderl_reward"  # TRL's name for it in logs: rewards/coderl_reward/mean

    def program(self, problem: Problem, prompt: Any, completion: Any) -> str:
        style = self.prompt_style if self.prompt_style != "auto" else detect_style(problem, prompt, completion)
        return extract_program(completion_text(completion), extraction_prompt(problem, style), problem)

    def __call__(self, prompts: list | None = None, completions: list | None = None,
                 completion_ids: list | None = None, **kwargs: Any) -> list[float | None]:
        if completions is None:
            raise TypeError("coderl reward: called without completions=")
        ids = kwargs.get(self.id_column)
        if ids is None:
            raise KeyError(f"coderl reward: the dataset has no column {self.id_column!r} (the problem id "
                           f"of each row; to_dataset writes it) among {sorted(kwargs)}")
        items, where = [], []
        for i, (completion, pid) in enumerate(zip(completions, ids)):
            problem = self.problems.get(str(pid))
            if problem is None:
                log.warning("coderl reward: unknown problem id %r: left unscored (None)", pid)
                continue
            items.append((problem, self.program(problem, prompts[i] if prompts else None, completion)))
            where.append(i)
        out: list[float | None] = [None] * len(completions)
        for i, r in zip(where, self.scorer.run(items, self.tests)):
            out[i] = None if r is None else float(self.table(r))
        if callable(kwargs.get("log_metric")) and where:
            kwargs["log_metric"]("coderl/unscored", sum(out[i] is None for i in where) / len(where))
        return out

    def close(self) -> None:
        self.scorer.close()


def for_trl(problems: Iterable[Problem] | str, *, url: str | None = None, token: str | None = None,
            reward: Any = "coderl", tests: str = "hidden", id_column: str = "problem_id",
            prompt_style: str = "auto", exec_config: ExecConfig | None = None) -> TRLReward:
    """A TRL reward function over ``problems`` (or a spec such as ``"mbpp"``), by ``id_column``;
    scored here (``exec_config``) or at ``url``; ``prompt_style`` ``auto``: told per row."""
    from coderl.serve.scoring import make_scorer

    return TRLReward(_problem_map(problems), make_scorer(url, token, exec_config), reward=reward,
                     tests=tests, id_column=id_column, prompt_style=prompt_style)


def to_dataset(problems: Iterable[Problem], prompt_style: str = "conversational", tokenizer: Any = None,
               id_column: str = "problem_id"):
    """A ``datasets.Dataset`` TRL accepts: ``prompt`` (see :func:`trl_prompt`) and ``id_column``."""
    from datasets import Dataset

    rows = [{"prompt": trl_prompt(p, prompt_style, tokenizer), id_column: str(p.id)} for p in problems]
    if not rows:
        raise ValueError("to_dataset: no problems")
    return Dataset.from_list(rows)


# -- veRL -----------------------------------------------------------------------------------------
def verl_ground_truth(problem: Problem) -> str:
    """The ``reward_model.ground_truth`` of a veRL row for ``problem``: its test fields as JSON."""
    return json.dumps({k: getattr(problem, k) for k in GROUND_TRUTH_FIELDS}, ensure_ascii=False)


def to_verl_rows(problems: Iterable[Problem], data_source: str | None = None) -> list[dict[str, Any]]:
    """veRL rows (``pandas.DataFrame(rows).to_parquet(path)``): chat prompt, ground truth, id."""
    return [{"data_source": data_source or f"coderl/{p.source}",
             "prompt": [{"role": "user", "content": chat_message(p)[0]}], "ability": "code",
             "reward_model": {"style": "rule", "ground_truth": verl_ground_truth(p)},
             "extra_info": {"problem_id": str(p.id)}} for p in problems]


@functools.lru_cache(maxsize=8)
def _problem_set(spec: str) -> dict[str, Problem]:
    return _problem_map(spec)


@functools.lru_cache(maxsize=4096)
def _parsed_ground_truth(text: str) -> Problem:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"ground_truth: not valid JSON ({e}): {text[:200]!r}") from None
    return problem_from_fields(data)


def problem_from_fields(data: Any) -> Problem:
    """A Problem from coderl test fields or SandboxFusion's ``{inputs, outputs[, fn_name]}``."""
    if not isinstance(data, dict):
        raise ValueError(f"ground_truth: expected a JSON object, got {type(data).__name__}")
    if "kind" not in data and "inputs" in data and "outputs" in data:
        fn = data.get("fn_name")
        if fn:
            data = {"kind": "call", "entry_point": fn, "source": "apps",
                    "tests": {"fn_name": fn, "inputs": data["inputs"], "outputs": data["outputs"]}}
        else:
            data = {"kind": "stdio", "tests": {"inputs": [str(x) for x in data["inputs"]],
                                               "outputs": [str(x) for x in data["outputs"]]}}
    if "kind" not in data or "tests" not in data:
        raise ValueError(f"ground_truth: expected coderl test fields (kind, tests, ...) or SandboxFusion's "
                         f"inputs/outputs; got the keys {sorted(data)}")
    fields = {"id": "verl", "source": "jsonl", "question": "(veRL)", **data}
    try:
        return Problem.from_dict(fields, path="ground_truth")
    except TypeError as e:
        raise ValueError(f"ground_truth: {e}") from None


def verl_problem(ground_truth: Any, extra_info: dict | None = None, problems: str | None = None) -> Problem:
    """The problem a veRL row's ``ground_truth`` names (see the module docstring)."""
    if isinstance(ground_truth, bytes):
        ground_truth = ground_truth.decode("utf-8")
    if isinstance(ground_truth, dict):
        return problem_from_fields(ground_truth)
    if not isinstance(ground_truth, str):
        raise ValueError(f"ground_truth: expected a JSON string, a dict or a problem id, got {type(ground_truth).__name__}")
    text = ground_truth.strip()
    if text.startswith("{"):
        return _parsed_ground_truth(text)
    spec = problems or (extra_info or {}).get("problems")
    if not spec:
        raise ValueError(f"ground_truth {text[:80]!r} is a problem id: name its problem set with "
                         "reward_kwargs.problems (or extra_info['problems']), e.g. 'mbpp'")
    found = _problem_set(str(spec)).get(text)
    if found is None:
        raise ProblemError(spec, text, "no such problem id in this problem set")
    return found


_VERL_SCORERS: dict[tuple, Any] = {}


def _verl_scorer(url: str | None, token: str | None, workers: int, timeout: float | None) -> Any:
    """One scorer per process and settings (veRL calls compute_score once per response)."""
    import os

    from coderl.serve.scoring import make_scorer
    from coderl.serve.serve_config import TOKEN_ENV

    token = (token or os.environ.get(TOKEN_ENV)) if url else None
    key = (url, token) if url else ("local", workers, timeout)
    if key not in _VERL_SCORERS:
        cfg = None if url else ExecConfig(workers=workers, **({"timeout": timeout} if timeout else {}))
        _VERL_SCORERS[key] = make_scorer(url, token, cfg)
    return _VERL_SCORERS[key]


def close() -> None:
    """Stop the executors ``compute_score`` started in this process (they stop at exit anyway)."""
    while _VERL_SCORERS:
        _VERL_SCORERS.popitem()[1].close()


def unscored_reward(table: Callable[[Result], float]) -> float:
    """The score without a verdict: the table's runtime-error reward (never above a failed run)."""
    return float(table(Result(problem_id="unscored", index=0, outcome=RUNTIME_ERROR)))


def _verl_score(result: Result | None, table: Callable[[Result], float], unscored: float) -> dict[str, Any]:
    if result is None:  # no verdict (engine or service failure): ``unscored``, and said so
        return {"score": unscored, "outcome": "unscored", "tests_passed": 0, "tests_total": 0}
    return {"score": float(table(result)), "outcome": result.outcome, "tests_passed": result.tests_passed,
            "tests_total": result.tests_total}


def compute_score_batch(data_sources: list, solution_strs: list[str], ground_truths: list,
                        extra_infos: list | None = None, *, url: str | None = None, token: str | None = None,
                        reward: Any = "coderl", problems: str | None = None, tests: str = "hidden",
                        workers: int = 0, timeout: float | None = None, unscored: float | None = None,
                        **unused: Any) -> list[dict[str, Any]]:
    """veRL's batch reward (``reward_manager=batch``): :func:`compute_score` for many responses."""
    if unused:
        log.debug("coderl compute_score: ignoring keyword(s) %s", sorted(unused))
    extra_infos = extra_infos if extra_infos is not None else [None] * len(solution_strs)
    items = []
    for solution, truth, info in zip(solution_strs, ground_truths, extra_infos):
        problem = verl_problem(truth, info, problems)
        prefix = (info or {}).get("prefix") or ""
        prompt = Prompt(text="", prefix=prefix, stop=[FENCE] if prefix else [], style="chat", fenced=bool(prefix))
        items.append((problem, extract_program(solution, prompt, problem)))
    results = _verl_scorer(url, token, workers, timeout).run(items, tests)
    table = reward_table(reward)
    fallback = 0.0 if None not in results else unscored_reward(table) if unscored is None else float(unscored)
    return [_verl_score(r, table, fallback) for r in results]


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **kwargs: Any) -> dict[str, Any]:
    """veRL's ``compute_score``: ``{"score", "outcome", "tests_passed", "tests_total"}`` for one
    response (``extra_info["prefix"]``: code it continues, when the prompt pre-filled a fence).
    ``kwargs`` (veRL's ``reward_kwargs``): ``url``/``token`` of a serve-executor (default: here),
    ``reward`` (coderl | rltf | pass_fail), ``problems`` (a problem-id ground truth's set), ``tests``
    (hidden | example), ``workers``, ``timeout``, ``unscored`` (default :func:`unscored_reward`)."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **kwargs)[0]
