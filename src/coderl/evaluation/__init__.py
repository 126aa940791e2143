"""Evaluation: pass@k (unbiased estimator), n@k with example-test filtering, reports and plots.

    from coderl.evaluation import EvalConfig, evaluate
    report = evaluate(problems, "runs/x/results.jsonl", "runs/x", EvalConfig(ks=[1, 10]),
                      samples_path="runs/x/samples.jsonl")
"""

from .metrics import n_at_k, pass_at_k
from .stage import EvalConfig, compute_metrics, evaluate, pass_table, render_markdown

__all__ = ["EvalConfig", "evaluate", "compute_metrics", "pass_table", "render_markdown", "pass_at_k", "n_at_k"]
