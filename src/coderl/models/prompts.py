"""Prompts per problem source, for plain (base / seq2seq) models and for chat models.

A :class:`Prompt` is what the model sees (``text``), the code it is made to continue (``prefix``:
part of the program) and the strings that end the program (``stop``);
:func:`coderl.models.extract.extract_program` turns ``prefix`` + the model's text into a program.

Formats (``style``):

* ``plain`` – the source's own format. APPS: CodeRL's ``\\nQUESTION:\\n...\\nANSWER:\\n``;
  MBPP: the standard prompt (task text + its tests, ``[BEGIN]``); HumanEval: the prompt itself.
* ``chat`` – the tokenizer's chat template with the same content as a user message, the
  assistant turn pre-filled with a ```` ```python ```` fence plus the code to continue (MBPP:
  ``def <entry_point>(``; APPS call-based: the starter code), so the closing fence stops it.
  HumanEval: the model writes the whole function.
* ``auto`` – ``chat`` when the tokenizer has a chat template (and the model is not
  encoder-decoder), else ``plain``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..problems.schema import Problem

STYLES = ("auto", "chat", "plain")
FENCE = "```"
# Codex / HumanEval stop sequences: a new top-level statement ends the completed function
HUMANEVAL_STOPS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert "]
MBPP_PLAIN_STOPS = ["[DONE]", "\n[BEGIN]", "\nassert ", "\n\n\n\n"]
APPS_PLAIN_STOPS = ["\nQUESTION:", "\nANSWER:", "\n\n\n\n"]


@dataclass
class Prompt:
    text: str                 # the full model input (chat template applied, prefill included)
    prefix: str = ""          # code the model continues; the program starts with it
    stop: list[str] = field(default_factory=list)
    style: str = "plain"      # chat | plain
    fenced: bool = False      # the model writes inside an opened ``` fence


def resolve_style(style: str, tokenizer, is_encoder_decoder: bool = False) -> str:
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; expected one of {STYLES}")
    if style == "auto":
        has_template = bool(getattr(tokenizer, "chat_template", None))
        return "chat" if has_template and not is_encoder_decoder else "plain"
    return style


def _prompt_kind(problem: Problem) -> str:
    """Which family of prompt: 'humaneval', 'mbpp' (function + asserts) or 'apps'."""
    if problem.source == "humaneval" or (problem.prompt and problem.kind == "assert" and problem.tests.get("check")):
        return "humaneval"
    return "mbpp" if problem.kind == "assert" else "apps"


def _mbpp_tests(problem: Problem) -> str:
    return "\n".join(problem.example_tests.get("asserts") or problem.tests.get("asserts", [])[:3])


def plain_prompt(problem: Problem) -> Prompt:
    kind = _prompt_kind(problem)
    if kind == "humaneval":
        text = problem.prompt or problem.question
        return Prompt(text=text, prefix=text, stop=list(HUMANEVAL_STOPS))
    if kind == "mbpp":
        text = (f"You are an expert Python programmer, and here is your task: {problem.question} "
                f"Your code should pass these tests:\n\n{_mbpp_tests(problem)}\n[BEGIN]\n")
        return Prompt(text=text, stop=list(MBPP_PLAIN_STOPS))
    # CodeRL's APPS format, verbatim
    text = ("\nQUESTION:\n" + problem.question + "\n" + problem.starter_code + "\n"
            + ("Use Call-Based format" if problem.kind == "call" else "Use Standard Input format")
            + "\nANSWER:\n")
    return Prompt(text=text, stop=list(APPS_PLAIN_STOPS))


def chat_message(problem: Problem) -> tuple[str, str]:
    """(user message, code the assistant's answer starts with)."""
    kind = _prompt_kind(problem)
    if kind == "humaneval":
        code = problem.prompt or problem.question  # (extraction keeps the prompt's imports)
        return (f"Complete the following Python function.\n{FENCE}python\n{code}{FENCE}", "")
    if kind == "mbpp":
        name = f" The function must be named `{problem.entry_point}`." if problem.entry_point else ""
        # the answer starts with the function's name, so the tests can find it
        start = f"def {problem.entry_point}(" if problem.entry_point else ""
        return (f"You are an expert Python programmer, and here is your task: {problem.question}"
                f"{name} Your code should pass these tests:\n\n{_mbpp_tests(problem)}", start)
    if problem.kind == "call":
        fn = problem.entry_point or problem.tests.get("fn_name")
        how = (f"Complete the function `{fn}` below; it is called with the inputs as arguments "
               "and must return the answer.")
        starter = problem.starter_code.rstrip() + "\n" if problem.starter_code.strip() else ""
        return (f"{problem.question}\n\n{how}\n{FENCE}python\n{starter}{FENCE}", starter)
    how = "Write a Python program that reads the input from standard input and prints the answer."
    return f"{problem.question}\n\n{how}", ""


def chat_prompt(problem: Problem, tokenizer, feedback: str | None = None) -> Prompt:
    user, code = chat_message(problem)
    if feedback:
        user += f"\n\n{feedback}"
    head = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)
    if not isinstance(head, str):  # some tokenizers return a BatchEncoding-like object
        head = tokenizer.decode(head)
    return Prompt(text=head + f"{FENCE}python\n" + code, prefix=code, stop=[FENCE], style="chat", fenced=True)


def build_prompt(problem: Problem, tokenizer=None, style: str = "auto", is_encoder_decoder: bool = False) -> Prompt:
    """The prompt for ``problem`` in ``style`` (see the module docstring)."""
    style = resolve_style(style, tokenizer, is_encoder_decoder)
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt style 'chat' needs a tokenizer with a chat template")
        return chat_prompt(problem, tokenizer)
    prompt = plain_prompt(problem)
    if not is_encoder_decoder and _adds_bos(tokenizer):
        prompt.text = tokenizer.bos_token + prompt.text
    return prompt


def _adds_bos(tokenizer) -> bool:
    """Whether the tokenizer starts a text with BOS (Gemma, Llama): a plain prompt then carries it
    (Gemma 3 270M's loss on code: 4.96 per token without it, 1.01 with it)."""
    if tokenizer is None or not getattr(tokenizer, "bos_token", None):
        return False
    try:
        ids = tokenizer("x").input_ids
    except Exception:
        return False
    return bool(ids) and ids[0] == tokenizer.bos_token_id
