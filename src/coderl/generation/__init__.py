"""Generation: batched sampling + the greedy baseline, as Sample records.

    from coderl.generation import GenerationConfig, GenRequest, generate, generate_samples
    generate(problems, "runs/x/samples.jsonl", GenerationConfig(num_seqs=10, temperature=0.8))  # the stage
    samples = generate_samples(lm, [GenRequest(p, 0, prefix="def f(")], GenerationConfig())   # in memory
"""

from ..records import ORIGINS, Sample, read_samples
from .core import GenRequest, RequestError, generate_samples
from .decode import Completion, decode_batch
from .stage import GenerationConfig, generate

__all__ = ["GenerationConfig", "generate", "generate_samples", "GenRequest", "RequestError", "Sample",
           "read_samples", "ORIGINS", "decode_batch", "Completion"]
