"""Program extraction: from the model's text to a program the executor runs.

Steps, in order:

1. cut the text at the first stop string (generation may overshoot by a token or two);
2. inside an opened fence, the code is ``prefix`` + that text; otherwise the first fenced block
   that looks like code (``python``/``py`` first), or, without a fence, the lines from the first
   code-looking line to the last one that still parses;
3. function-style problems (MBPP, HumanEval, APPS call-based) lose the top-level scaffolding the
   model tends to append (``assert`` lines, bare ``print(...)`` calls, ``if __name__ ==
   "__main__":`` blocks): a wrong guess there would turn a correct function into a runtime error;
4. HumanEval: a re-emitted whole function is used (the prompt's imports kept in front).
"""

from __future__ import annotations

import ast
import re

from ..problems.schema import Problem
from .prompts import Prompt

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_CODE_START = re.compile(
    r"^(def |class |import |from \w|@|if |for |while |try:|with |async def |[A-Za-z_][\w\.]*"
    r"(\[.*\])?\s*(=|\+=|-=)|print\(|[A-Za-z_]\w*\()")


def cut_at_stop(text: str, stop: list[str] | tuple[str, ...]) -> str:
    """``text`` up to the earliest occurrence of any stop string."""
    return text[:min((text.find(s) for s in stop if s and s in text), default=len(text))]


def parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of each ``` block; an unclosed last block runs to the end."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE_RE.finditer(text)]


def _strip_prose(text: str) -> str:
    """Code without a fence: from the first code-looking line to the last line that parses."""
    lines = text.split("\n")
    start = next((i for i, l in enumerate(lines) if _CODE_START.match(l)), None)
    if start is None:
        return text.strip("\n")
    lines = lines[start:]
    for end in range(len(lines), 0, -1):  # longest prefix that parses
        cand = "\n".join(lines[:end])
        if cand.strip() and parses(cand):
            return cand.rstrip() + "\n"
    return "\n".join(lines).rstrip() + "\n"


def strip_scaffolding(code: str) -> str:
    """Drop top-level asserts, bare print calls and ``if __name__ == '__main__'`` blocks."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    drop: list[tuple[int, int]] = []
    for node in tree.body:
        bad = isinstance(node, ast.Assert)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            f = node.value.func
            bad = isinstance(f, ast.Name) and f.id == "print"
        if isinstance(node, ast.If):
            t = node.test
            bad = isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__"
        if bad:
            drop.append((node.lineno, node.end_lineno or node.lineno))
    if not drop:
        return code
    keep = [l for i, l in enumerate(code.split("\n"), 1) if not any(a <= i <= b for a, b in drop)]
    return "\n".join(keep).rstrip() + "\n"


def _pick_block(blocks: list[tuple[str, str]], entry_point: str | None) -> str | None:
    if not blocks:
        return None
    pythonic = [c for lang, c in blocks if lang in ("python", "py", "python3", "")]
    pool = pythonic or [c for _, c in blocks]
    if entry_point:
        for c in pool:
            if re.search(rf"\bdef {re.escape(entry_point)}\b", c):
                return c
    return pool[0]


def _humaneval_program(prompt: str, body: str, entry_point: str | None) -> str:
    """Prompt + completed body, or the prompt's imports + a function the model rewrote whole."""
    if entry_point and re.search(rf"^def {re.escape(entry_point)}\b", body, re.M):
        head = [l for l in prompt.split("\n") if l.startswith(("import ", "from "))]
        return ("\n".join(head) + "\n\n" if head else "") + body
    return prompt + body


def _continued_program(prefix: str, body: str) -> str:
    """Pre-filled code + the model's continuation, unless it started over with the same line."""
    first = next((l for l in prefix.split("\n") if l.strip()), None)
    return body if first and body.lstrip().startswith(first.strip()) else prefix + body


def extract_program(raw: str, prompt: Prompt, problem: Problem) -> str:
    """The program in the model's text ``raw`` generated for ``prompt`` (see module docstring)."""
    text = cut_at_stop(raw, prompt.stop)
    if not prompt.fenced and not prompt.prefix:  # free text: find the code in it
        block = _pick_block(fenced_blocks(text), problem.entry_point)
        text = block if block is not None else _strip_prose(text)
    if problem.prompt and problem.tests.get("check"):  # HumanEval: complete or redefine
        code = _humaneval_program(problem.prompt, text, problem.entry_point)
    elif prompt.prefix:  # the model continued pre-filled code
        code = _continued_program(prompt.prefix, text)
    else:
        code = text.strip("\n") + "\n"
    return strip_scaffolding(code) if problem.kind in ("assert", "call") else code
