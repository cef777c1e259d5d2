"""The model and data cache behind the ``gpt2_bench`` fixture, and how a case is measured.

``Workbench`` holds what is loaded once (tokenizer, packed blocks) and one model at a time: a
new model key frees the previous model before the next is built, so the peak memory of a case
is never inflated by a model of an earlier case. What differs by phase is its adapter's
(phases.py); settings live in settings.py and machine facts in environment.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from gpt2_fixtures.bench import (
    controls,
    counters,
    data,
    distill,
    flops,
    models,
    optimizations,
    phases,
)
from gpt2_fixtures.bench.environment import device_name
from gpt2_fixtures.bench.errors import first_line
from gpt2_fixtures.bench.measure import (
    CountedStep,
    Job,
    Measured,
    RoundHooks,
    measure_case,
)
from gpt2_fixtures.bench.memory import MB, keep_for_good, memory_tracker, resident_mb, trim_heap
from gpt2_fixtures.bench.prepare import attention_kernel, prepare
from gpt2_fixtures.bench.settings import Settings, SettingsError
from gpt2_fixtures.config import Case


class Workbench:
    """Loaded once per pytest session: tokenizer, packed blocks per length, the current model."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spec = models.resolve_model(settings.model, settings.weights)
        self._tokenizer: Any = None
        self._text: Any = None
        self._blocks: dict[int, torch.Tensor] = {}
        self._model_key: tuple[Any, ...] | None = None
        self._model: torch.nn.Module | None = None
        # Parameters of the current model as built, before optimizations.apply: int8 packs its
        # weights out of parameters() and padvocab adds rows, neither changes the model's size.
        self._model_n_params = 0
        self._config: Any = None
        # The distill phase's second slot, tied to the current model key and freed with it.
        self._teacher: torch.nn.Module | None = None
        self._configs: dict[models.ModelSpec, Any] = {}
        # What the process held just before the current model was built (resident_mb):
        # the base of every case's footprint_memory_mb while that model lives.
        self._base_mb: float | None = None

    # -- data ----------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = data.load_tokenizer(self.settings.tokenizer)
        return self._tokenizer

    def blocks(self, seq_len: int) -> torch.Tensor:
        """Packed blocks of ``seq_len`` tokens, made once; what making them holds belongs to the
        workbench, so it is added to the footprint's base when a model is already built."""
        if seq_len not in self._blocks:
            dev = self.settings.device
            before = resident_mb(dev) if self._base_mb is not None else None
            if self._text is None:
                self._text = data.load_text(self.settings.dataset)
            self._blocks[seq_len] = data.pack_blocks(self._text, self.tokenizer, seq_len)
            after = resident_mb(dev) if before is not None else None
            if self._base_mb is not None and before is not None and after is not None:
                self._base_mb += after - before
        return self._blocks[seq_len]

    def batch(self, case: Case) -> torch.Tensor:
        """The case's batch, already on the device (the copy stays out of the timed step)."""
        cpu = data.take_batch(self.blocks(case.seq_len), case.batch_size, self.settings.dataset)
        return cpu.to(self.settings.device)

    # -- model ---------------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        if self._config is None:
            self._config = models.model_config(self.spec)
        return self._config

    def config_of(self, spec: models.ModelSpec) -> Any:
        if spec == self.spec:
            return self.config
        if spec not in self._configs:
            self._configs[spec] = models.model_config(spec)
        return self._configs[spec]

    def distill_options(self) -> distill.DistillOptions:
        if self.settings.distill is None:
            raise SettingsError("these settings were built without distillation options")
        return self.settings.distill

    def model(self, case: Case) -> torch.nn.Module:
        """The model for ``case``, built once per (optimization, phase), freed before the next."""
        key = (case.optimization, case.phase)
        if key != self._model_key:
            self.free_model()
            spec = phases.ADAPTERS[case.phase].spec(self)
            # What the process keeps for good (data, tokenizer, model code) is no case's own:
            # loaded before the footprint's base is read.
            self.blocks(case.seq_len)
            models.import_model_code(self.config_of(spec), case.optimization)
            keep_for_good()  # once a process, before its first model
            self._base_mb = resident_mb(self.settings.device)
            built = models.build(spec, case.optimization, self.config_of(spec))
            self._model_n_params = models.n_params(built)
            dev = self.settings.device
            self._model = optimizations.apply(built, case.optimization, dev, case.phase)
            self._model_key = key
        assert self._model is not None
        return self._model

    def teacher(self, case: Case) -> torch.nn.Module:
        """The distill case's teacher beside its student, in inference form (weights in the
        optimization's precision, eval mode); built after the student, freed with it."""
        self.model(case)  # the student first: a new key frees both slots
        if self._teacher is None:
            opts = self.distill_options()
            config = self.config_of(opts.teacher)
            try:
                distill.check_pair(
                    config, self.config_of(opts.student), opts.teacher.name, opts.student.name
                )
            except ValueError as exc:
                raise SettingsError(str(exc)) from None
            built = models.build(opts.teacher, case.optimization, config)
            self._teacher = optimizations.apply(
                built, case.optimization, self.settings.device, "infer"
            )
        return self._teacher

    def free_model(self) -> None:
        self._model, self._model_key, self._teacher = None, None, None
        self._base_mb = None
        models.release()

    # -- measuring -----------------------------------------------------------------------------
    def n_params(self, model: torch.nn.Module) -> int:
        return self._model_n_params if model is self._model else models.n_params(model)

    def measure(
        self,
        benchmark: Any,
        case: Case,
        step: Callable[[], None],
        model: torch.nn.Module,
        job: Job | None = None,
    ) -> Measured:
        """Time ``step`` round by round; ``.info`` holds the case's ``extra_info`` measurements.

        The one measuring path: on one device, or on every rank of a ``job`` (distributed.py),
        whose record is then the slowest rank's round and the whole job's throughput.
        """
        s, adapter = self.settings, phases.ADAPTERS[case.phase]
        n, tokens = self.n_params(model), adapter.tokens(case)
        counted = CountedStep(step)
        control = controls.control_for(model, s.device, case, tokens, n, s.control, adapter.twin)
        memory = memory_tracker(s.device)
        hooks = RoundHooks(memory, control) if job is None else job.hooks(memory, control)
        before = counters.compile_mark() if case.optimization.compile else None
        hooks.probe = counters.compile_mark if before is not None else None
        prepared = prepare(counted, case.optimization, model)  # compile_s
        result = self._rounds(benchmark, counted, hooks, (case.batch_size, tokens), job)
        # from the settled profiled step; where there was none, one more (counted) call
        prepared["attn_kernel"] = attention_kernel(counted, case.optimization, hooks.profile)
        info = self.describe(case, n) | prepared | {"loss": None}
        info |= {} if job is None else job.keys()
        info |= result.info | self.flops_info(case, result.times)
        if before is not None and result.times is not None:
            info |= counters.compile_counters(before, *hooks.timed_probes(len(result.times)))
        if job is None:
            info["max_logit_diff"] = self.logit_diff(case, model)
        return dataclasses.replace(result, info=info, calls=counted.calls)

    def _rounds(
        self,
        benchmark: Any,
        counted: CountedStep,
        hooks: RoundHooks,
        work: tuple[int, int],
        job: Job | None,
    ) -> Measured:
        """The timed and settled rounds; a job's from a common start, counting all its work."""
        plan, base = self.settings.round_plan(), self._base_mb
        if job is None:
            return measure_case(benchmark, counted, hooks, plan, work, base_mb=base)
        job.barrier()
        work = (work[0] * job.size, work[1] * job.size)
        return measure_case(
            benchmark, counted, hooks, plan, work,
            timed_step=job.timed(counted), reduce=job.reduce, base_mb=base,
        )  # fmt: skip

    def flops_info(self, case: Case, times: list[float] | None) -> dict[str, Any]:
        """``flops_per_step``, ``achieved_tflops``, ``mfu``, ``peak_tflops`` (see flops.py)."""
        s = self.settings
        step_flops = phases.ADAPTERS[case.phase].step_flops(self, case)
        dtype = flops.compute_dtype(
            case.optimization.precision, case.optimization.int8, flops.tf32_matmul()
        )
        peak = s.peak_tflops or flops.peak_tflops(s.device, device_name(s.device), dtype)
        return flops.flops_metrics(step_flops, times, peak)

    def logit_diff(self, case: Case, model: torch.nn.Module) -> float | None:
        """Reduced-precision inference against the fp32 model on the case's batch, after the
        measured rounds (so the reference model never counts in the case's memory peak)."""
        if not (
            phases.ADAPTERS[case.phase].logit_check and optimizations.reduced(case.optimization)
        ):
            return None
        optimization = optimizations.reference_optimization(case.optimization)
        reference = optimizations.apply(
            models.build(self.spec, optimization, self.config),
            optimization,
            self.settings.device,
            "infer",
        )
        try:
            return optimizations.max_logit_diff(model, reference, self.batch(case))
        finally:
            del reference
            models.release()
            trim_heap()

    def describe(self, case: Case, n_params: int) -> dict[str, Any]:
        """What the case is: the keys that say which configuration produced the numbers."""
        weights_dtype = optimizations.weights_dtype(case.optimization, case.phase)
        return {
            "phase": case.phase,
            "model": self.settings.model,
            "weights": self.settings.weights,
            "optimization": case.optimization.id,
            "attn_implementation": case.optimization.attn_implementation,
            "dtype": case.optimization.dtype,
            "weights_dtype": str(weights_dtype).split(".")[-1],
            "device": self.settings.device,
            "device_name": device_name(self.settings.device),
            "batch_size": case.batch_size,
            "seq_len": case.seq_len,
            "n_params": n_params,
            "dataset": self.settings.dataset,
            "tokenizer": self.settings.tokenizer.source,
        } | phases.ADAPTERS[case.phase].keys(self, case)


# ---------------------------------------------------------------------------------------------
# Failures

OUT_OF_MEMORY: tuple[type[BaseException], ...] = (torch.OutOfMemoryError,)


def out_of_memory_message(name: str, exc: BaseException) -> str:
    """One line: which case, how much memory it held and tried to get."""
    first = first_line(exc, 240) if str(exc).strip() else "out of memory"
    held = ""
    if torch.cuda.is_available():
        held = f"; {torch.cuda.max_memory_allocated() / MB:.0f} MB peak allocated"
    return f"{name}: out of memory ({first}{held}); memory released, the grid goes on"
