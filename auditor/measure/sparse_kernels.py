"""Does a sparse kernel turn unstructured sparsity into speed? Dense matmul vs torch sparse, timed.

For every linear shape of SmolLM2-135M (hidden 576, intermediate 1536, 9 query heads and 3
key/value heads of 64) and for a whole forward of a model of that shape, y = x W^T is timed with
W stored dense (zeros included: what every dense format runs), as CSR and as BSR (32 x 32
blocks; BSR stores every block holding a non-zero, so unstructured zeros rarely empty a block),
at 50%, 70% and 90% unstructured sparsity, on the CPU. With a CUDA device, 2:4 semi-structured
sparsity (torch.sparse.to_sparse_semi_structured, fp16) is timed against dense fp16 too; without
one that part is skipped with a note.

Zeros sit at uniformly random positions (seeded): what magnitude pruning leaves in i.i.d. weights,
and the worst case for block formats. Timings interleave the kernels (dense, CSR, BSR, dense, ...)
over `rounds` rounds so that a change of the machine's load hits them alike; each sample is the
mean of `inner` back-to-back calls, sized so that a dense sample takes about `sample_s` seconds.
The raw seconds go to the run directory; auditor.analysis.claims.sparse_kernel_table turns
them into speed-ups with bootstrap intervals. Figures, never a test.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from auditor.core.files import write_json
from auditor.core.provenance import machine, now_utc, package_versions
from auditor.data.rundir import SPARSE_KERNELS_FILE

log = logging.getLogger(__name__)

#: SmolLM2-135M: hidden 576, intermediate 1536, 9 heads x 64 (q, o), 3 key/value heads x 64 (k, v), 30 layers.
SMOLLM2 = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
           "head_dim": 64, "num_hidden_layers": 30, "vocab_size": 49152}
SPARSITIES = (0.5, 0.7, 0.9)
BLOCK = 32  # BSR block edge: divides 576, 192 and 1536
CPU_KERNELS = ("dense", "csr", "bsr")


def linear_shapes(config: dict = SMOLLM2) -> dict[str, tuple[int, int]]:
    """(out_features, in_features) of each distinct linear of a Llama decoder layer, by projection names."""
    h, i = config["hidden_size"], config["intermediate_size"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    q = config["num_attention_heads"] * config["head_dim"]
    return {"q_proj, o_proj": (q, h), "k_proj, v_proj": (kv, h), "gate_proj, up_proj": (i, h), "down_proj": (h, i)}


@dataclass(frozen=True)
class SparseKernelSettings:
    sparsities: tuple[float, ...] = SPARSITIES
    tokens: tuple[int, ...] = (1, 64)  # 1: a decode step (matrix-vector); 64: a prompt's prefill
    rounds: int = 5
    sample_s: float = 0.01
    forward_tokens: int = 32
    forward_layers: int | None = None  # None: all of SmolLM2's 30 layers
    forward_rounds: int = 3
    n_threads: int | None = None
    seed: int = 0

    def threads(self) -> int:
        return self.n_threads or os.cpu_count() or 1


@dataclass
class KernelTiming:
    """Seconds per call of one kernel, one value per round (aligned with dense's of the same case)."""

    scope: str  # "linear" | "forward"
    name: str  # projection names, or "whole forward (N layers)"
    shape: tuple[int, int] | None
    tokens: int
    sparsity: float
    kernel: str  # dense | csr | bsr | 2:4 (cuda) | dense fp16 (cuda)
    device: str
    seconds: list[float]
    stored_fraction: float | None = None  # share of W's entries (values) the layout stores; BSR: blocks kept


@dataclass
class SparseKernelReport:
    settings: SparseKernelSettings
    timings: list[KernelTiming] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_average: dict = field(default_factory=dict)
    wall_s: float = math.nan

    def to_json(self) -> dict:
        return {"settings": asdict(self.settings), "timings": [asdict(t) for t in self.timings],
                "notes": self.notes, "load_average": self.load_average, "wall_s": self.wall_s,
                "created_utc": now_utc(), "machine": machine(), "versions": package_versions(),
                "torch_threads": self.settings.threads()}


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def sparsify(weight, sparsity: float, generator):
    """`weight` with round(sparsity * numel) entries set to zero at seeded uniformly random positions."""
    import torch

    k = round(sparsity * weight.numel())
    idx = torch.randperm(weight.numel(), generator=generator)[:k]
    out = weight.clone().reshape(-1)
    out[idx] = 0
    return out.reshape(weight.shape)


def _inner_count(fn: Callable[[], Any], sample_s: float) -> int:
    """Calls per sample so that one sample of `fn` lasts about `sample_s` (at least 1)."""
    fn()  # warm-up: first-call allocations
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, min(10_000, round(sample_s / once)))


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, sample_s: float | None) -> dict[str, list[float]]:
    """Seconds per call of each function: `rounds` rounds of fn1, fn2, ... in turn. A sample is the
    mean of as many back-to-back calls as fill about `sample_s` for that function (one call when None)."""
    inner = {k: 1 if sample_s is None else _inner_count(fn, sample_s) for k, fn in fns.items()}
    if sample_s is None:
        for fn in fns.values():
            fn()  # warm-up: first-call allocations
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            out[name].append((time.perf_counter() - start) / inner[name])
    return out


def _cpu_layouts(w) -> dict[str, tuple[Any, float]]:
    """Dense, CSR and BSR forms of `w` (out, in) and the share of entries each stores."""
    dense = w.contiguous()
    csr = w.to_sparse_csr()
    bsr = w.to_sparse_bsr((BLOCK, BLOCK))
    nnz = int((w != 0).sum())
    return {"dense": (dense, 1.0), "csr": (csr, nnz / w.numel()),
            "bsr": (bsr, bsr.values().numel() / w.numel())}


def time_linears(settings: SparseKernelSettings, report: SparseKernelReport) -> None:
    """Per SmolLM2 linear shape, token count and sparsity: y^T = W x^T with W dense, CSR and BSR."""
    import torch

    gen = torch.Generator().manual_seed(settings.seed)
    for name, (out_f, in_f) in linear_shapes().items():
        base = torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f)
        for tokens in settings.tokens:
            x_t = torch.randn(in_f, tokens, generator=gen)
            for sparsity in settings.sparsities:
                layouts = _cpu_layouts(sparsify(base, sparsity, gen))
                fns = {k: (lambda m=m: torch.mm(m, x_t) if m.layout == torch.strided else torch.sparse.mm(m, x_t))
                       for k, (m, _) in layouts.items()}
                got = interleaved(fns, settings.rounds, settings.sample_s)
                for kernel, (_, stored) in layouts.items():
                    report.timings.append(KernelTiming("linear", name, (out_f, in_f), tokens, sparsity, kernel, "cpu",
                                                       got[kernel], stored))
                log.info("%s %dx%d, %d tokens, %.0f%%: %s", name, out_f, in_f, tokens, 100 * sparsity,
                         {k: f"{1e6 * sorted(v)[len(v) // 2]:.0f} us" for k, v in got.items()})


class _SparseLinear:
    """A forward hook stand-in: y = (W_sparse @ x^T)^T + b for x of shape (..., in)."""

    def __init__(self, weight, bias) -> None:
        self.weight, self.bias = weight, bias

    def __call__(self, x):
        import torch

        flat = x.reshape(-1, x.shape[-1])
        y = torch.sparse.mm(self.weight, flat.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], y.shape[-1])


def _smollm2_shaped_model(layers: int, seed: int):
    """A randomly initialised Llama with SmolLM2-135M's shapes (weights do not change the timing)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=SMOLLM2["vocab_size"], hidden_size=SMOLLM2["hidden_size"],
                      intermediate_size=SMOLLM2["intermediate_size"], num_hidden_layers=layers,
                      num_attention_heads=SMOLLM2["num_attention_heads"],
                      num_key_value_heads=SMOLLM2["num_key_value_heads"], head_dim=SMOLLM2["head_dim"],
                      max_position_embeddings=2048, tie_word_embeddings=True)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


def time_forward(settings: SparseKernelSettings, report: SparseKernelReport) -> None:
    """A whole forward over `forward_tokens` tokens: every decoder linear dense, CSR or BSR at each sparsity.

    The embedding and the (tied) output head stay dense, as pruning leaves them. The sparse forms
    replace each nn.Linear's forward; dense keeps the zeros in the ordinary weight.
    """
    import torch

    layers = settings.forward_layers or SMOLLM2["num_hidden_layers"]
    model = _smollm2_shaped_model(layers, settings.seed)
    gen = torch.Generator().manual_seed(settings.seed + 1)
    linears = [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    originals = [m.weight.detach().clone() for m in linears]
    ids = torch.randint(0, SMOLLM2["vocab_size"], (1, settings.forward_tokens), generator=gen)
    name = f"whole forward ({layers} layers)"
    for sparsity in settings.sparsities:
        forms: dict[str, list] = {k: [] for k in CPU_KERNELS}
        stored = {k: 0.0 for k in CPU_KERNELS}
        for m, w0 in zip(linears, originals):
            w = sparsify(w0, sparsity, gen)
            m.weight.data.copy_(w)
            for kernel, (form, share) in _cpu_layouts(w).items():
                forms[kernel].append(form)
                stored[kernel] += share * w.numel()
        total = sum(w.numel() for w in originals)

        def call(kernel: str) -> None:
            for m, form in zip(linears, forms[kernel]):
                if kernel == "dense":
                    m.__dict__.pop("forward", None)  # nn.Linear's own forward over the zero-filled weight
                else:
                    m.forward = _SparseLinear(form, m.bias)
            with torch.inference_mode():
                model(input_ids=ids, use_cache=False, logits_to_keep=1)

        fns = {k: functools.partial(call, k) for k in CPU_KERNELS}
        got = interleaved(fns, settings.forward_rounds, None)
        for kernel in CPU_KERNELS:
            report.timings.append(KernelTiming("forward", name, None, settings.forward_tokens, sparsity, kernel,
                                               "cpu", got[kernel], stored[kernel] / total))
        log.info("%s, %.0f%%: %s", name, 100 * sparsity,
                 {k: f"{sorted(v)[len(v) // 2]:.2f} s" for k, v in got.items()})
    for m in linears:
        m.__dict__.pop("forward", None)


def time_semi_structured(settings: SparseKernelSettings, report: SparseKernelReport) -> None:
    """2:4 semi-structured sparsity on CUDA (fp16, cuSPARSELt/CUTLASS) vs dense fp16, per linear shape."""
    import torch

    if not torch.cuda.is_available():
        report.notes.append("2:4 semi-structured: skipped, no CUDA device here (torch's 2:4 kernels need an "
                            "NVIDIA GPU of compute capability 8.0 or newer)")
        return
    from torch.sparse import to_sparse_semi_structured

    gen = torch.Generator().manual_seed(settings.seed)
    for name, (out_f, in_f) in linear_shapes().items():
        w = torch.randn(out_f, in_f, generator=gen)
        keep = w.abs().reshape(out_f, in_f // 4, 4).argsort(dim=-1)[..., 2:]  # 2 largest of every 4
        mask = torch.zeros(out_f, in_f // 4, 4, dtype=torch.bool).scatter_(-1, keep, True).reshape(out_f, in_f)
        w = (w * mask).half().cuda()
        try:
            sparse = to_sparse_semi_structured(w)
        except (RuntimeError, ValueError) as exc:
            report.notes.append(f"2:4 semi-structured {name}: not supported on this device ({exc})")
            continue
        for tokens in (max(settings.tokens), 128):
            x = torch.randn(tokens, in_f, generator=gen).half().cuda()

            def dense_fn(w=w, x=x):
                torch.nn.functional.linear(x, w)
                torch.cuda.synchronize()

            def sparse_fn(sparse=sparse, x=x):
                torch.nn.functional.linear(x, sparse)
                torch.cuda.synchronize()
            fns = {"dense fp16": dense_fn, "2:4": sparse_fn}
            got = interleaved(fns, settings.rounds, settings.sample_s)
            for kernel in fns:
                report.timings.append(KernelTiming("linear", name, (out_f, in_f), tokens, 0.5, kernel, "cuda",
                                                   got[kernel], 0.5 if kernel == "2:4" else 1.0))


def write_sparse_kernels(report: SparseKernelReport, out_dir: Path) -> Path:
    """OUT/sparse_kernels.json: the raw seconds per round that the run view reads."""
    path = Path(out_dir) / SPARSE_KERNELS_FILE
    write_json(report.to_json(), path)
    return path


def measure_sparse_kernels(settings: SparseKernelSettings = SparseKernelSettings(), *,
                           forward: bool = True) -> SparseKernelReport:
    """Time every case; the load average is read before and after (the CPU may be shared)."""
    import torch

    torch.set_num_threads(settings.threads())
    report = SparseKernelReport(settings)
    start, before = time.perf_counter(), _load_average()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse (CSR|BSR|CSC|BSC) tensor support is in beta.*")
        time_linears(settings, report)
        if forward:
            time_forward(settings, report)
        else:
            report.notes.append("whole forward: not timed (--no-forward)")
        time_semi_structured(settings, report)
    after = _load_average()
    report.wall_s = time.perf_counter() - start
    report.load_average = {"start": before, "end": after}
    return report
