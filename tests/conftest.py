"""Shared fixtures: tiny randomly initialised models (causal Llama and T5) with a tokenizer built
locally with ``tokenizers``, saved as Hugging Face directories (session-scoped, built in ~1 s)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# where the tiny models of the generation tests run: CODERL_TEST_DEVICE=cuda checks the GPU path
DEVICE = os.environ.get("CODERL_TEST_DEVICE", "cpu")

_CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "def remove_Occ(s, ch):\n    return s.replace(ch, '', 1)\n",
    "import sys\nn = int(input())\nprint(n * 2)\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
    "class Solution:\n    def solve(self, nums):\n        return sorted(nums)\n",
    "Write a python function to find the sum of a list. Your code should pass these tests:\n",
    "assert add(1, 2) == 3\nassert remove_Occ('hello', 'l') == 'helo'\n",
    "QUESTION:\nUse Standard Input format\nANSWER:\n```python\n```\n",
]
SPECIALS = ["<pad>", "</s>", "<s>", "<unk>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def build_tokenizer(chat: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   bos_token="<s>", unk_token="<unk>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def _save_causal(path, chat: bool):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(chat=chat)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory):
    """A 2-layer Llama (hidden 32) without a chat template: plain prompts."""
    return _save_causal(tmp_path_factory.mktemp("tiny_causal"), chat=False)


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory):
    """The same tiny Llama with a chat template: chat prompts with a pre-filled fence."""
    return _save_causal(tmp_path_factory.mktemp("tiny_chat"), chat=True)


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory):
    """A 2+2-layer T5 (d_model 32): the paper's encoder-decoder architecture."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    path = tmp_path_factory.mktemp("tiny_t5")
    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                   num_decoder_layers=2, num_heads=4, pad_token_id=tok.pad_token_id,
                   eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
    T5ForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def mbpp_problems():
    from coderl.problems import load_problems

    return load_problems("mbpp", split="test", end=3)
