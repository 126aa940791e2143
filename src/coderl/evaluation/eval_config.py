"""The ``evaluate`` stage's config (beside ``stage.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, opt, validate


@dataclass
class EvalConfig:
    ks: list[int] = opt([1, 5, 10, 100], "pass@k values (repeatable); k larger than the samples per "
                        "problem are left out and listed.", ge=1, flag="--k")
    n_at_k: list[str] = opt(["1@10", "5@10"], "n@k with example-test filtering, like 1@10 "
                            "(repeatable).", flag="--n-at-k")
    plots: bool = opt(True, "Write pass_at_k.png and outcomes.png.")
    resamples: int = opt(1000, "Bootstrap resamples for --compare intervals.", ge=10)
    seed: int = opt(0, "Seed of the bootstrap.", ge=0)
    compare: str | None = opt(None, "Another run (its directory or report.json): every metric's "
                              "difference with a paired-bootstrap 95% interval (report.compare.json).")

    def __post_init__(self) -> None:
        validate(self, "evaluation")
        self.parsed_n_at_k()

    def parsed_n_at_k(self) -> list[tuple[int, int]]:
        out = []
        for s in self.n_at_k:
            try:
                n, k = (int(x) for x in str(s).split("@"))
            except ValueError:
                raise ConfigError(f"evaluation.n_at_k: entries look like '1@10', got {s!r}") from None
            if not 1 <= n <= k:
                raise ConfigError(f"evaluation.n_at_k: {s!r} needs 1 <= n <= k")
            out.append((n, k))
        return out
