"""SandboxFusion's ``/run_code`` on coderl's sandbox: a program and its stdin in, how it ran out.

The program runs as a one-test stdin/stdout problem, so it takes exactly the executor's stdio path
(``verdicts.stdio_test``: a fresh process per run in the confined child, stdin from a file,
stdout captured, the whole group killed at the limit). Its verdict is then translated into
SandboxFusion's response, the fields veRL's ``sandbox_fusion`` client reads:

| coderl result                          | status  | run_result.status | return_code   |
|----------------------------------------|---------|-------------------|---------------|
| ran to the end (passed / failed)       | Success | Finished          | 0             |
| exception, syntax error, memory        | Failed  | Finished          | 1             |
| ``sys.exit(n)``, ``os._exit(n)``, n!=0 | Failed  | Finished          | n             |
| killed by a signal (SIGSEGV, ...)      | Failed  | Finished          | -signal       |
| time limit                             | Failed  | TimeLimitExceeded | null          |
| engine failure                         | SandboxError | (run_result null) |          |

The program runs as a script would (the job's ``real_exit``): ``sys.exit(n)`` / ``raise
SystemExit(n)`` end it with status n (0 for ``sys.exit()``), ``exit("message")`` with status 1 and
the message on stderr, as SandboxFusion reports them (``POST /v1/execute`` keeps APPS's rule that an
exit after printing is a normal end; a top-level ``return`` is a SyntaxError here, as in Python,
where APPS's harness wraps the program in a function). ``compile_timeout`` is accepted and has no effect (Python
compiles as part of the run, under ``run_timeout``). ``stderr`` is what the program wrote there,
plus a Python-style last line for an exception (``ZeroDivisionError: division by zero``), since the
traceback itself stays in the sandbox. The whole stdout comes back (the job's ``capture`` is the
server's ``execution.max_output_kb``; a program printing more than that is a runtime error, output
limit), so a long answer is compared whole by the caller.
"""

from __future__ import annotations

import re
import signal
from typing import Any

from coderl.execution import codes as oc
from coderl.execution.outcome import Result
from coderl.problems.schema import Problem

RUN_CODE_ID = "run_code"
_STATUS = re.compile(r"exit status (\d+)")
_KILLED = re.compile(r"killed by (SIG[A-Z0-9]+)")


def stdio_problem(stdin: str | None) -> Problem:
    """A one-test stdio problem feeding ``stdin`` (no APPS import block: plain ``python``)."""
    return Problem(id=RUN_CODE_ID, source="jsonl", question="run_code", kind="stdio",
                   tests={"inputs": [stdin or ""], "outputs": [""]})


def _return_code(r: Result) -> int:
    if r.error_type == "ExitStatus":
        m = _STATUS.fullmatch(r.error_message or "")
        if m:
            return int(m.group(1))
    m = _KILLED.search(r.error_message or "")
    if r.detail == oc.KILLED and m:
        try:
            return -int(signal.Signals[m.group(1)])
        except KeyError:
            pass
    return 1


def _stderr(r: Result) -> str:
    """The program's stderr, then the error as Python's last traceback line would show it."""
    if (not r.error_type and not r.error_message) or r.error_type == "ExitStatus":
        return r.stderr  # (an exit status prints nothing but what the program wrote)
    where = f'  File "<program>", line {r.error_line}\n' if r.error_line else ""
    last = f"{r.error_type}: {r.error_message}" if r.error_message else str(r.error_type)
    sep = "" if not r.stderr or r.stderr.endswith("\n") else "\n"
    return f"{r.stderr}{sep}{where}{last}\n"


def to_sandbox_fusion(r: Result) -> dict[str, Any]:
    """SandboxFusion's response for the result of a ``stdio_problem`` run (table above)."""
    if r.detail == oc.ENGINE:
        return {"status": "SandboxError", "message": f"sandbox failure: {r.error_message}",
                "compile_result": None, "run_result": None, "files": {}}
    finished = r.outcome in (oc.PASSED, oc.FAILED)
    timeout = r.detail == oc.TIMEOUT
    run = {"status": "TimeLimitExceeded" if timeout else "Finished", "execution_time": r.wall_time,
           "return_code": 0 if finished else (None if timeout else _return_code(r)),
           "stdout": r.stdout, "stderr": _stderr(r)}
    message = "" if finished else (r.detail or r.error_type or r.outcome)
    return {"status": "Success" if finished else "Failed", "message": message,
            "compile_result": None, "run_result": run, "files": {}}
