"""Executors: where units of work run. The runner plans units and commits results; executors compute.

`local` (default) computes units one after the other in this process with one
UnitWorker. `ray` submits each unit as a Ray task with its CPU/GPU request, to
the cluster at `ray_address` or to a local cluster started here; Ray workers
keep a UnitWorker per run context, so a worker process loads the model once.
Both yield UnitResults as units complete and the runner writes them, so results
are committed by the same code whichever executor computed them.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import ClassVar, Iterator, Sequence

from auditor.core.errors import AuditorError
from auditor.data.rundir import Unit
from auditor.study.spec import ExecutionSettings
from auditor.study.units import RunContext, UnitResult, UnitWorker

log = logging.getLogger(__name__)


class Executor(ABC):
    """Computes units; yields each result as it completes (not necessarily in submission order)."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, ctx: RunContext, units: Sequence[Unit]) -> Iterator[UnitResult]:
        """Compute `units`; an error in a unit is raised here after the units already yielded."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers and connections."""


class LocalExecutor(Executor):
    """Units in this process, in the order given (the runner groups them by variant)."""

    name = "local"

    def __init__(self) -> None:
        self._worker: UnitWorker | None = None

    def run(self, ctx: RunContext, units: Sequence[Unit]) -> Iterator[UnitResult]:
        if self._worker is None or self._worker.ctx != ctx:
            self.close()
            self._worker = UnitWorker(ctx)
        for unit in units:
            yield self._worker.execute(unit)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


# One worker per run context in each Ray worker process (a process runs one task at a time).
_RAY_WORKERS: dict[str, UnitWorker] = {}


def _ray_execute(ctx: RunContext, unit: Unit) -> UnitResult:
    worker = _RAY_WORKERS.get(ctx.key)
    if worker is None:
        for old in _RAY_WORKERS.values():
            old.close()
        _RAY_WORKERS.clear()
        worker = _RAY_WORKERS[ctx.key] = UnitWorker(ctx)
    try:
        return worker.execute(unit)
    except AuditorError as exc:
        # DataError and friends take extra constructor arguments and do not survive pickling;
        # the message is what the driver reports.
        raise AuditorError(str(exc)) from None


def import_ray():
    try:
        import ray
    except ImportError:
        raise AuditorError("execution.executor = \"ray\" needs Ray, an optional extra: "
                           "pip install 'compression-risk-auditor[ray]' (ray==2.60.0)") from None
    return ray


class RayExecutor(Executor):
    """Each unit a Ray task requesting `cpus_per_unit` CPUs and `gpus_per_unit` GPUs."""

    name = "ray"

    def __init__(self, address: str | None = None, *, cpus_per_unit: float = 1.0, gpus_per_unit: float = 0.0,
                 num_cpus: int | None = None) -> None:
        self.address = address
        self.cpus_per_unit = cpus_per_unit
        self.gpus_per_unit = gpus_per_unit
        self.num_cpus = num_cpus  # for a local cluster started here; None = every core
        self._started = False

    def _connect(self):
        ray = import_ray()
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": True}
            if self.address:
                kwargs["address"] = self.address
            elif self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray cluster"
                raise AuditorError(f"execution.ray_address: cannot connect to {where} ({exc})") from None
            self._started = True
        return ray

    def run(self, ctx: RunContext, units: Sequence[Unit]) -> Iterator[UnitResult]:
        if not units:
            return
        ray = self._connect()
        # No retries: a failed unit is reported, and the next `auditor run` redoes it.
        task = ray.remote(num_cpus=self.cpus_per_unit, num_gpus=self.gpus_per_unit, max_retries=0)(_ray_execute)
        ctx_ref = ray.put(ctx)
        pending = {task.remote(ctx_ref, unit): unit for unit in units}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                unit = pending.pop(done[0])
                try:
                    result = ray.get(done[0])
                except Exception as exc:  # a RayTaskError wraps the worker's exception
                    cause = getattr(exc, "cause", None) or exc
                    if isinstance(cause, AuditorError):
                        raise AuditorError(str(cause)) from None
                    raise RuntimeError(f"unit {unit.id} failed on Ray: {cause!r}") from exc
                yield result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def make_executor(settings: ExecutionSettings) -> Executor:
    if settings.executor == "ray":
        import_ray()  # fail before any work when the extra is missing
        return RayExecutor(settings.ray_address, cpus_per_unit=settings.cpus_per_unit,
                           gpus_per_unit=settings.gpus_per_unit)
    return LocalExecutor()
