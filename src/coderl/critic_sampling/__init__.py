"""Critic sampling (CodeRL §3.3): refine and repair programs at inference under a budget, then
submit the critic's best (``cs_stage``), and the repair model it can use (``repair_trainer``)."""

from .cs_config import CriticSamplingConfig

__all__ = ["CriticSamplingConfig"]
