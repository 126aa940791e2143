"""Execution outcomes (CodeRL's four classes): names, codes, critic classes, aggregation.

| outcome         | harness code | critic class | CodeRL reward |
|-----------------|--------------|--------------|---------------|
| compile_error   | -2           | 0            | -1.0          |
| runtime_error   | -1           | 1            | -0.6          |  (timeouts and memory kills, see ``detail``)
| failed          | False        | 2            | -0.3          |
| passed          | True         | 3            | +1.0          |

"compile error" follows CodeRL's harness: the program could not be loaded — a SyntaxError, or, for
call-based and assert-based problems, an exception raised while its top level runs (defining the
functions). For stdin/stdout problems running the top level *is* the test, so errors there are
runtime errors.
"""

from __future__ import annotations

from typing import Any

COMPILE_ERROR = "compile_error"
RUNTIME_ERROR = "runtime_error"
FAILED = "failed"
PASSED = "passed"

OUTCOMES = (COMPILE_ERROR, RUNTIME_ERROR, FAILED, PASSED)
#: the same, best first (how reports list them)
OUTCOMES_BEST_FIRST = tuple(reversed(OUTCOMES))
#: CodeRL's harness codes.
CODES: dict[str, int | bool] = {COMPILE_ERROR: -2, RUNTIME_ERROR: -1, FAILED: False, PASSED: True}
#: critic classes (index into the critic's 4-way softmax).
CRITIC_CLASS: dict[str, int] = {COMPILE_ERROR: 0, RUNTIME_ERROR: 1, FAILED: 2, PASSED: 3}

# ``detail`` values for runtime errors that are not ordinary exceptions.
TIMEOUT = "timeout"
MEMORY = "memory"
OUTPUT_LIMIT = "output_limit"
KILLED = "killed"          # died from a signal (``signal`` says which)
EXITED = "exited"          # left before answering (os._exit, sys.exit at load, closed channel)
PROTOCOL = "protocol"      # sent something that is not a valid harness reply
ENGINE = "engine"          # the engine itself failed (never cached)

MAX_TEXT = 2000  # characters kept of stdout / stderr / error messages


def outcome_from_code(code: Any) -> str:
    """Map a CodeRL harness code (-2, -1, False, True) to the outcome string."""
    if code is True:
        return PASSED
    if code is False:
        return FAILED
    if code == -2:
        return COMPILE_ERROR
    if code == -1:
        return RUNTIME_ERROR
    raise ValueError(f"not a CodeRL harness code: {code!r}")


def aggregate(per_test: list[Any]) -> str:
    """CodeRL's rule: any -2 -> compile error; any -1 -> runtime error; all True -> passed."""
    codes = [v for v in per_test if not isinstance(v, bool)]
    if -2 in codes:
        return COMPILE_ERROR
    if -1 in codes:
        return RUNTIME_ERROR
    return PASSED if per_test and all(v is True for v in per_test) else FAILED


def truncate(text: str | None, limit: int = MAX_TEXT) -> str:
    if not text:
        return ""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n...[{len(text) - limit} characters cut]...\n{text[-half:]}"
