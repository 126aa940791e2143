"""Generation: batched sampling + the greedy baseline, written as Sample records (JSONL).

    from coderl.generation import GenerationConfig, generate
    generate(problems, "runs/x/samples.jsonl", GenerationConfig(num_seqs=10, temperature=0.8))
"""

from .decode import Completion, decode_batch
from .sample import ORIGINS, Sample, read_samples
from .stage import GenerationConfig, generate

__all__ = ["GenerationConfig", "generate", "Sample", "read_samples", "ORIGINS", "decode_batch",
           "Completion"]
