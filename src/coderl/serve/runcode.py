"""SandboxFusion's ``/run_code`` on coderl's sandbox: a program and its stdin in, how it ran out.

The program runs as a one-test stdin/stdout problem, so it takes exactly the executor's stdio path
(``verdicts.stdio_test``: a fresh process per run in the confined child, stdin from a file,
stdout captured, the whole group killed at the limit). Its verdict is then translated into
SandboxFusion's response, the fields veRL's ``sandbox_fusion`` client reads:

| coderl result                          | status  | run_result.status | return_code   |
|----------------------------------------|---------|-------------------|---------------|
| ran to the end (passed / failed)       | Success | Finished          | 0             |
| exception, syntax error, memory, exit  | Failed  | Finished          | 1             |
| killed by a signal (SIGSEGV, ...)      | Failed  | Finished          | -signal       |
| time limit                             | Failed  | TimeLimitExceeded | null          |
| engine failure                         | SandboxError | (run_result null) |          |

``sys.exit(n)`` ends a run normally, as in the APPS harness (return code 0); ``compile_timeout``
is accepted and has no effect (Python compiles as part of the run, under ``run_timeout``).
``stderr`` is what the program wrote there, plus a Python-style last line for the error
(``ZeroDivisionError: division by zero``), since the traceback itself stays in the sandbox.
The executor keeps 2000 characters of stdout (head and tail); a longer output is, by the
server's ``long_stdout`` setting, a SandboxError (default: a correct long answer is never
silently compared as wrong) or returned cut as coderl keeps it. For exact verdicts on long
outputs use ``POST /v1/execute``, whose comparison happens on the full output.
"""

from __future__ import annotations

import re
import signal
from typing import Any

from coderl.execution import codes as oc
from coderl.execution.outcome import Result
from coderl.problems.schema import Problem

RUN_CODE_ID = "run_code"
_CUT = re.compile(r"\n\.\.\.\[\d+ characters cut\]\.\.\.\n")
_KILLED = re.compile(r"killed by (SIG[A-Z0-9]+)")


def stdio_problem(stdin: str | None) -> Problem:
    """A one-test stdio problem feeding ``stdin`` (no APPS import block: plain ``python``)."""
    return Problem(id=RUN_CODE_ID, source="jsonl", question="run_code", kind="stdio",
                   tests={"inputs": [stdin or ""], "outputs": [""]})


def is_cut(stdout: str) -> bool:
    """Whether the executor cut this output (longer than oc.MAX_TEXT: head + marker + tail)."""
    return len(stdout) > oc.MAX_TEXT and _CUT.search(stdout) is not None


def _return_code(r: Result) -> int:
    m = _KILLED.search(r.error_message or "")
    if r.detail == oc.KILLED and m:
        try:
            return -int(signal.Signals[m.group(1)])
        except KeyError:
            pass
    return 1


def _stderr(r: Result) -> str:
    """The program's stderr, then the error as Python's last traceback line would show it."""
    if not r.error_type and not r.error_message:
        return r.stderr
    where = f'  File "<program>", line {r.error_line}\n' if r.error_line else ""
    last = f"{r.error_type}: {r.error_message}" if r.error_message else str(r.error_type)
    sep = "" if not r.stderr or r.stderr.endswith("\n") else "\n"
    return f"{r.stderr}{sep}{where}{last}\n"


def to_sandbox_fusion(r: Result, long_stdout: str = "error") -> dict[str, Any]:
    """SandboxFusion's response for the result of a ``stdio_problem`` run (table above)."""
    if r.detail == oc.ENGINE:
        return {"status": "SandboxError", "message": f"sandbox failure: {r.error_message}",
                "compile_result": None, "run_result": None, "files": {}}
    if is_cut(r.stdout) and long_stdout == "error":
        return {"status": "SandboxError", "compile_result": None, "run_result": None, "files": {},
                "message": f"stdout longer than the {oc.MAX_TEXT} characters this sandbox keeps: not comparable "
                           "(POST /v1/execute compares the full output; or start the server with "
                           "--long-stdout truncate)"}
    finished = r.outcome in (oc.PASSED, oc.FAILED)
    timeout = r.detail == oc.TIMEOUT
    run = {"status": "TimeLimitExceeded" if timeout else "Finished", "execution_time": r.wall_time,
           "return_code": 0 if finished else (None if timeout else _return_code(r)),
           "stdout": r.stdout, "stderr": _stderr(r)}
    message = "" if finished else (r.detail or r.error_type or r.outcome)
    return {"status": "Success" if finished else "Failed", "message": message,
            "compile_result": None, "run_result": run, "files": {}}
