"""The feature baseline the critic must beat: a logistic regression on simple program features.

Features (:data:`FEATURES`): the program's length in characters and lines (log1p), whether it
compiles, whether it calls ``input()`` / ``print``, and the ratio of program to prompt length.
Fitted on the critic's training split; its P(passed) is what AUROC / average precision measure.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from typing import Sequence

import numpy as np

FEATURES = ("log_chars", "log_lines", "compiles", "uses_input", "uses_print", "program_prompt_ratio")
_INPUT = re.compile(r"\binput\s*\(|\bsys\.stdin\b")
_PRINT = re.compile(r"\bprint\s*\(")


def compiles(program: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning for odd escapes etc.
            compile(program, "<program>", "exec")
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False


def program_features(program: str, prompt: str) -> list[float]:
    """The features of one program (see :data:`FEATURES`)."""
    return [math.log1p(len(program)), math.log1p(program.count("\n") + 1), float(compiles(program)),
            float(bool(_INPUT.search(program))), float(bool(_PRINT.search(program))),
            len(program) / max(1, len(prompt))]


def feature_matrix(programs: Sequence[str], prompts: Sequence[str]) -> np.ndarray:
    rows = [program_features(p, q) for p, q in zip(programs, prompts)]
    return np.array(rows, dtype=np.float64).reshape(-1, len(FEATURES))


class FeatureBaseline:
    """StandardScaler + LogisticRegression; ``predict_proba`` in the critic's class order."""

    def __init__(self, num_classes: int, seed: int = 0):
        self.num_classes, self.seed = num_classes, seed
        self.model = None

    def fit(self, X: np.ndarray, y: Sequence[int]) -> "FeatureBaseline":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        y = np.asarray(y)
        if len(set(y.tolist())) < 2:
            self.constant = int(y[0])
            return self
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=self.seed))
        self.model.fit(X, y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros((len(X), self.num_classes))
        if self.model is None:
            out[:, self.constant] = 1.0
            return out
        p = self.model.predict_proba(X)
        for j, c in enumerate(self.model.classes_):
            out[:, int(c)] = p[:, j]
        return out

    def coefficients(self) -> dict[str, list[float]] | None:
        if self.model is None:
            return None
        lr = self.model[-1]
        return {f"class_{int(c)}" if lr.coef_.shape[0] > 1 else "logit": [round(float(v), 4) for v in row]
                for c, row in zip(lr.classes_ if lr.coef_.shape[0] > 1 else [1], lr.coef_)}


def majority_proba(train_labels: Sequence[int], n: int, num_classes: int) -> np.ndarray:
    """The majority-class baseline: the training class frequencies (a constant score: AUROC 0.5)."""
    counts = Counter(int(y) for y in train_labels)
    freq = np.array([counts.get(c, 0) for c in range(num_classes)], dtype=np.float64)
    freq = freq / max(1.0, freq.sum())
    return np.tile(freq, (n, 1))
