"""Output comparison, run on the trusted side only, following the APPS / CodeRL harness rules.

``stdio_equal``: the cascade of APPS's ``run_test`` (without its in-place mutation of the expected
outputs): stripped text, line lists, lines without blanks, a float tolerance (``numpy.allclose``
defaults), per-line word sets in any order, the same with numbers rounded to 3 decimals.
``call_equal``: tuples become lists; an expected output wrapped in a one-element list also
matches its element.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any


def _stripped_equal(a: str, b: str) -> bool:
    return a.strip() == b.strip()


def _allclose(a: list[float], b: list[float]) -> bool:  # numpy.allclose(rtol=1e-5, atol=1e-8)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if math.isnan(x) or math.isnan(y):
            return False
        if math.isinf(x) or math.isinf(y):
            if x != y:
                return False
            continue
        if abs(x - y) > 1e-8 + 1e-5 * abs(y):
            return False
    return True


def stdio_equal(output: str, expected: str | list[str]) -> bool:
    """Does program stdout ``output`` match ``expected`` under the APPS rules?"""
    if isinstance(expected, list):
        expected = "\n".join(expected)
    lines = output.splitlines()
    # 1. whole text, stripped (also with every line stripped)
    if _stripped_equal("\n".join(lines), expected):
        return True
    if _stripped_equal("\n".join(l.strip() for l in lines), expected):
        return True
    # 2. line lists: expected lines stripped, blank ones dropped
    exp_lines = [l.strip() for l in expected.split("\n") if l]
    if lines == exp_lines:
        return True
    lines = [l for l in lines if l]
    if lines == exp_lines:
        return True
    # 3. float tolerance, line by line
    with contextlib.suppress(ValueError):
        if _allclose([float(l) for l in lines], [float(e) for e in exp_lines]):
            return True
    # 4. set of per-line word sets (order of lines and of words ignored)
    out_sets = [set(l.split()) for l in lines]
    out_sets = [s for s in out_sets if s]
    exp_sets = [set(e.split()) for e in exp_lines]
    if {frozenset(s) for s in out_sets} == {frozenset(s) for s in exp_sets}:
        return True
    # 5. the same with numbers rounded to 3 decimals
    try:
        return ({frozenset(round(float(t), 3) for t in s) for s in out_sets}
                == {frozenset(round(float(t), 3) for t in s) for s in exp_sets})
    except (ValueError, OverflowError):
        return False


def normalise_call_inputs(args: Any) -> list[Any]:
    """APPS undoes JSON's string keys for a dict passed as the single argument."""
    if not isinstance(args, list):
        args = [args]
    if args and isinstance(args[0], dict):
        with contextlib.suppress(TypeError, ValueError):
            return [{int(k): v for k, v in args[0].items()}]
    return args


def normalise_call_output(expected: Any) -> Any:
    with contextlib.suppress(TypeError, ValueError):
        if isinstance(expected, dict):
            return [{int(k): v for k, v in expected.items()}]
        if isinstance(expected, list) and expected and isinstance(expected[0], dict):
            return [{int(k): v for k, v in expected[0].items()}]
    return expected


def call_equal(output: Any, expected: Any) -> bool:
    """APPS call-based rule. ``output`` is plain decoded data (never a program object)."""
    expected = normalise_call_output(expected)
    if isinstance(output, tuple):
        output = list(output)
    if _safe_eq(output, expected):
        return True
    if isinstance(expected, list) and expected and _safe_eq(output, expected[0]):
        return True
    if isinstance(output, list) and output and isinstance(output[0], tuple):
        if isinstance(expected, list) and expected and _safe_eq([list(x) for x in output], expected[0]):
            return True
    return False


def _safe_eq(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # a Handle pair, or an unorderable comparison
        return False
