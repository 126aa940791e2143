"""coderl.execution: sandboxed, hack-proof, fast unit-test execution (CodeRL's reward).

``Executor(ExecConfig())`` runs programs against a Problem's tests in warm sandboxed workers and
returns ``Result`` records; ``Rewards`` turns them into CodeRL / RLTF rewards; ``execute`` is the
resumable ``coderl execute`` stage. Names are imported lazily: the worker processes load only
what they need (a smaller process forks faster).
"""

from __future__ import annotations

from coderl import lazy_exports

_EXPORTS = {
    "COMPILE_ERROR": "outcome", "RUNTIME_ERROR": "outcome", "FAILED": "outcome", "PASSED": "outcome",
    "OUTCOMES": "outcome", "Result": "outcome", "Rewards": "outcome", "outcome_from_code": "outcome",
    "ExecConfig": "exec_config", "Executor": "pool", "Limits": "exec_config", "execute": "stage",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
