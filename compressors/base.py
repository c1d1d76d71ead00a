"""The Compressor interface and the Variant it produces.

A compressor has a name, a family (prune / quantize), a level (sparsity or
bits) and one way to apply it to a loaded model. Chains apply compressors in
order (prune, then quantize). The maths lives in pure tensor functions
(`compressors.masks`, `compressors.quantize_math`); classes only load, hook and save.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from auditor.core.names import LLAMA_CPP, TORCH, variant_id

Family = Literal["prune", "quantize"]


@dataclass(frozen=True)
class CalibrationData:
    """Token ids for calibration, shape (n_samples, seq_len), and where the text came from."""

    input_ids: Any  # torch.LongTensor
    origin: str


@dataclass
class StepReport:
    """What one compressor did: its spec, parameters, measured effect and wall time."""

    spec: str
    family: Family
    params: dict[str, Any]
    wall_s: float
    measured: dict[str, Any] = field(default_factory=dict)


@dataclass
class Variant:
    """A compressed (or dense) model and how it was made.

    Torch-served variants hold `model`; llama.cpp-served ones hold `gguf_path`.
    """

    spec: str
    model: Any | None = None
    gguf_path: Path | None = None
    steps: list[StepReport] = field(default_factory=list)
    #: A float32 safetensors folder holding exactly this variant's weights (the dense model, unmodified):
    #: an exporter reads it instead of the model, so the weights never have to be resident.
    weights_dir: Path | None = None

    @property
    def variant_id(self) -> str:
        return variant_id(self.spec)

    @property
    def runtime(self) -> str:
        return TORCH if self.model is not None else LLAMA_CPP

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "variant_id": self.variant_id,
            "runtime": self.runtime,
            "gguf_path": str(self.gguf_path) if self.gguf_path else None,
            "steps": [s.__dict__ for s in self.steps],
        }


def chain_spec(base: str, step: str) -> str:
    """The spec of `base` followed by `step` ("dense" is the empty chain)."""
    return step if base == "dense" else f"{base}+{step}"


class Compressor(ABC):
    """One technique at one level. Subclasses set `method` and `family` and implement `apply`."""

    method: ClassVar[str]
    family: ClassVar[Family]
    needs_calibration: ClassVar[bool] = False
    #: Model forwards over the calibration tokens a build runs (the cost `auditor run --plan` counts).
    calibration_passes: ClassVar[int] = 0
    #: Whether `apply` takes `blocks` (a `BlockWeights`) and finishes block i before touching block i+1,
    #: so a build can read one float32 block at a time and leave each in the scoring dtype.
    streams_blocks: ClassVar[bool] = False
    #: Whether `apply` changes the torch model's weights (so they must be ordinary memory, not a file's
    #: mapping); an exporter that only reads them (GGUF quantization) sets False.
    modifies_model: ClassVar[bool] = True

    def __init__(self, level: float | None, params: dict[str, Any] | None = None) -> None:
        self.level = level
        self.params = dict(params or {})

    @property
    def spec(self) -> str:
        return self.spec_text()

    def spec_text(self) -> str:
        return self.method if self.level is None else f"{self.method}@{self._level_text()}"

    def _level_text(self) -> str:
        return f"{self.level:g}"

    @abstractmethod
    def apply(self, variant: Variant, *, calibration: CalibrationData | None = None,
              seed: int = 0, workdir: Path | None = None) -> Variant:
        """Return a new Variant made from `variant` (which may be modified in place)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, params={json.dumps(self.params, default=str)})"
