"""The example tests shown in an APPS question's text (critic sampling and n@k filter on them):
Codeforces ``-----Example(s)-----`` Input/Output blocks, AtCoder / CodeChef ``-----Sample Input
N-----`` sections, LeetCode ``Input: ...`` / ``Output: ...`` and Codewars ``fn(args) == expected``
lines. A dataset's ``example_input_output.json`` wins over this.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
from typing import Any

_HEADER = re.compile(r"^\s*-{3,}\s*(.*?)\s*-{3,}\s*$")
_SAMPLE_IN = re.compile(r"^sample\s+input\s*(\d*)\s*:?$", re.I)
_SAMPLE_OUT = re.compile(r"^sample\s+output\s*(\d*)\s*:?$", re.I)
_EXAMPLE = re.compile(r"^(examples?|sample|samples|sample\s+tests?|test\s+cases?)\s*\d*\s*:?$", re.I)
_IN_MARK = re.compile(r"^\s*(sample\s+)?input\s*\d*\s*:?\s*$", re.I)
_OUT_MARK = re.compile(r"^\s*(sample\s+)?output\s*\d*\s*:?\s*$", re.I)


def _block(lines: list[str]) -> str:
    """Trim blank lines at both ends; a test's text ends with exactly one newline."""
    text = "\n".join(l.rstrip() for l in lines).strip("\n")
    return text + "\n" if text else ""


def _first_paragraph(lines: list[str]) -> list[str]:
    """Lines up to the first blank line after some content: prose often follows a sample."""
    out: list[str] = []
    for line in lines:
        if not line.strip() and any(l.strip() for l in out):
            break
        out.append(line)
    return out


def _sections(question: str) -> list[tuple[str, list[str]]]:
    """Split on ``-----Title-----`` header lines into (title, body lines)."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in question.splitlines():
        m = _HEADER.match(line)
        if m:
            sections.append((m.group(1), []))
        else:
            sections[-1][1].append(line)
    return sections


def _pairs_from_marked_lines(body: list[str]) -> list[tuple[str, str]]:
    """``Input`` / ``Output`` marker lines inside an Example(s) section -> (input, output) pairs."""
    pairs, cur_in, cur_out, mode = [], None, None, None
    buf: list[str] = []

    def flush():
        nonlocal cur_in, cur_out
        if mode == "in":
            cur_in = _block(buf)
        elif mode == "out":
            cur_out = _block(_first_paragraph(buf))
            if cur_in is not None and cur_in.strip() and cur_out.strip():
                pairs.append((cur_in, cur_out))
            cur_in, cur_out = None, None

    for line in body:
        if _IN_MARK.match(line):
            flush()
            mode, buf = "in", []
        elif _OUT_MARK.match(line):
            flush()
            mode, buf = "out", []
        elif mode is not None:
            buf.append(line)
    flush()
    return pairs


def extract_stdio_examples(question: str) -> dict[str, list[str]]:
    inputs: list[str] = []
    outputs: list[str] = []
    pending_in: dict[str, str] = {}  # "Sample Input N" waiting for its "Sample Output N"
    for title, body in _sections(question):
        m_in, m_out = _SAMPLE_IN.match(title), _SAMPLE_OUT.match(title)
        if m_in:
            pending_in[m_in.group(1) or "1"] = _block(_first_paragraph(body))
        elif m_out:
            key = m_out.group(1) or "1"
            if key not in pending_in and len(pending_in) == 1:  # "Input 1" / "Output" mismatch
                key = next(iter(pending_in))
            if key in pending_in:
                inp, out = pending_in.pop(key), _block(_first_paragraph(body))
                if inp.strip() and out.strip():
                    inputs.append(inp)
                    outputs.append(out)
        elif _EXAMPLE.match(title):
            for inp, out in _pairs_from_marked_lines(body):
                inputs.append(inp)
                outputs.append(out)
    return {"inputs": inputs, "outputs": outputs}


# -- call-based -----------------------------------------------------------------------------------
_JSONISH = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def _literal(text: str) -> Any:
    text = text.strip().rstrip(".").strip()
    if text in _JSONISH:
        return _JSONISH[text]
    with contextlib.suppress(ValueError, SyntaxError, MemoryError, RecursionError):
        return ast.literal_eval(text)
    with contextlib.suppress(ValueError, RecursionError):
        return json.loads(text)
    # JSON-style literals inside Python containers: [true, null]
    fixed = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", text)))
    return ast.literal_eval(fixed)


def _call_args(text: str) -> list[Any]:
    """``arr = [2,3], k = 5`` or ``[2,3], 5`` -> [[2, 3], 5]."""
    text = text.strip()
    for candidate in (text, re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", text)))):
        try:
            call = ast.parse(f"f({candidate})", mode="eval").body
        except SyntaxError:
            continue
        assert isinstance(call, ast.Call)
        try:
            return [ast.literal_eval(a) for a in call.args] + [ast.literal_eval(k.value) for k in call.keywords]
        except (ValueError, SyntaxError):
            continue
    raise ValueError(f"cannot parse arguments {text!r}")


_LC_INPUT = re.compile(r"^\s*Input\s*:\s*(.+?)\s*$", re.I)
_LC_OUTPUT = re.compile(r"^\s*Output\s*:\s*(.+?)\s*$", re.I)


def extract_call_examples(question: str, fn_name: str) -> dict[str, Any]:
    inputs: list[list[Any]] = []
    outputs: list[Any] = []
    lines = question.splitlines()
    # LeetCode: "Input: a = 1, b = [2]" then "Output: 3" on a following line.
    for i, line in enumerate(lines):
        m = _LC_INPUT.match(line)
        if not m:
            continue
        for nxt in lines[i + 1:i + 4]:
            mo = _LC_OUTPUT.match(nxt)
            if mo:
                try:
                    args, out = _call_args(m.group(1)), _literal(mo.group(1))
                except (ValueError, SyntaxError):
                    break
                inputs.append(args)
                outputs.append(out)
                break
    if inputs:
        return {"fn_name": fn_name, "inputs": inputs, "outputs": outputs}
    # Codewars: "fn(1, 2) == 3", "fn(1, 2) => 3", "fn(1, 2) # returns 3", "fn(1,2) -> 3".
    pat = re.compile(
        rf"\b{re.escape(fn_name)}\s*\((?P<args>.*)\)\s*(?:==|=>|->|#\s*=>|#\s*returns?|returns?|should\s+return)\s*(?P<out>.+?)\s*$"
    )
    seen = set()
    for line in lines:
        m = pat.search(line.strip().strip("`"))
        if not m:
            continue
        try:
            args, out = _call_args(m.group("args")), _literal(m.group("out").strip("`; "))
        except (ValueError, SyntaxError):
            continue
        key = repr((args, out))
        if key not in seen:
            seen.add(key)
            inputs.append(args)
            outputs.append(out)
    return {"fn_name": fn_name, "inputs": inputs, "outputs": outputs}


def extract_examples(question: str, fn_name: str | None = None) -> dict[str, Any]:
    """Example tests shown in ``question``: stdio pairs, or call-based ones when ``fn_name``."""
    if fn_name:
        return extract_call_examples(question, fn_name)
    return extract_stdio_examples(question)
