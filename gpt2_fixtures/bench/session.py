"""The benchmark session: settings, and what is loaded once (tokenizer, blocks, one model).

``Settings`` is what the options resolve to (device-dependent defaults filled in);
``BenchSession`` is the object behind the session fixture. It holds one model at a time: a new
model key frees the previous model before the next is built, so the peak memory of a case is
never inflated by a model of an earlier case.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from gpt2_fixtures.bench import (
    controls,
    data,
    distill,
    flops,
    generation,
    measure,
    models,
    optimizations,
)
from gpt2_fixtures.config import PRESETS, Case, Recipe, parse_recipes


class SettingsError(ValueError):
    """An option value that cannot run here; the message is one line."""


# Defaults per device type. The CPU grid finishes in about 3 minutes on a 2-core machine with the
# tiny preset; the CUDA grid is the classic sweep (batch 1/8/32 x length 128/512/1024).
DEFAULTS = {
    "cpu": {
        "model": "tiny",
        "batch_sizes": (1, 4),
        "seq_lens": (64, 256),
        # int8 runs in the infer and generate phases (train and distill skip it): +16 s on a
        # quiet 2-core machine, 68 -> 84 s for the whole grid (docs/optimizations.md).
        "optimizations": "eager-fp32,sdpa-fp32,int8",
        "rounds": 20,
        "warmup": 2,
    },
    "cuda": {
        "model": "gpt2",
        "batch_sizes": (1, 8, 32),
        "seq_lens": (128, 512, 1024),
        # Issue 3's grid: attention x precision, FlashAttention-2, int8, torch.compile
        # (docs/optimizations.md). padvocab and fusedadam are opt-in: name them.
        "optimizations": (
            "eager-fp32,sdpa-fp32,eager-bf16,sdpa-bf16,flash2-bf16,sdpa-fp16,int8,sdpa-bf16-compile"
        ),
        "rounds": 20,
        "warmup": 3,
    },
}


@dataclass(frozen=True)
class Settings:
    device: str
    model: str
    weights: str
    dataset: str
    batch_sizes: tuple[int, ...]
    seq_lens: tuple[int, ...]
    recipes: tuple[Recipe, ...]
    recipes_explicit: bool
    rounds: int
    warmup: int
    n_positions: int
    extra: dict[str, Any] = field(default_factory=dict)
    # Phase-specific sweeps (docs/phases.md); None only when built by hand without them.
    generate: generation.GenerateOptions | None = None
    distill: distill.DistillOptions | None = None
    # --gpt2-peak-tflops: the peak MFU divides by, instead of the device table's (flops.py).
    peak_tflops: float | None = None
    # --gpt2-control: the workload timed before every round (controls.py).
    control: str = controls.TWIN

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    def header(self) -> str:
        recipes = ",".join(r.id for r in self.recipes)
        return (
            f"gpt2-bench: device={self.device} ({device_name(self.device)}) model={self.model} "
            f"weights={self.weights} dataset={self.dataset} "
            f"batch_sizes={','.join(map(str, self.batch_sizes))} "
            f"seq_lens={','.join(map(str, self.seq_lens))} optimizations={recipes} "
            f"rounds={self.rounds} warmup={self.warmup} cpu_threads={torch.get_num_threads()} "
            f"malloc={measure.malloc_setting()} control={self.control}"
            + "".join(f"\n  {p.header()}" for p in (self.generate, self.distill) if p)
        )


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    index = int(requested.split(":")[1]) if ":" in requested else 0
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        build = f"torch {torch.__version__}, CUDA {torch.version.cuda or 'not built in'}"
        raise SettingsError(
            f"--gpt2-device {requested}: this machine has {count} usable CUDA device(s) "
            f"({build}); use --gpt2-device cpu or auto"
        )
    return f"cuda:{index}"


def set_cpu_threads(threads: int | None) -> None:
    """Intra-op threads for CPU kernels; recorded as ``cpu_threads`` in machine_info.

    On a machine shared with other work, torch's default of one thread per core makes small
    steps wait on each other's OpenMP threads (measured here: a 32-token tiny generation took
    4-5 s on two threads under load and 0.6 s on one).
    """
    if threads is not None:
        torch.set_num_threads(threads)


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def resolve(
    *,
    device: str = "auto",
    model: str | None = None,
    weights: str = "auto",
    dataset: str = "embedded",
    batch_sizes: tuple[int, ...] | None = None,
    seq_lens: tuple[int, ...] | None = None,
    recipes: tuple[Recipe, ...] | None = None,
    rounds: int | None = None,
    warmup: int | None = None,
    prompt_lens: tuple[int, ...] | None = None,
    new_tokens: tuple[int, ...] | None = None,
    teacher: str | None = None,
    student: str | None = None,
    kd_temperature: float | None = None,
    kd_alpha: float | None = None,
    peak_tflops: float | None = None,
    control: str = controls.TWIN,
) -> Settings:
    """Fill the device-dependent defaults and check what can be checked before collection."""
    dev = resolve_device(device)
    defaults = DEFAULTS["cuda" if dev.startswith("cuda") else "cpu"]
    name = model or str(defaults["model"])
    spec = models.resolve_model(name, weights)
    n_positions = (
        PRESETS[name].n_positions
        if spec.source == "preset" and not spec.pretrained
        else models.max_positions(models.model_config(spec))
    )
    lens = seq_lens or tuple(defaults["seq_lens"])  # type: ignore[arg-type]
    too_long = [s for s in lens if s > n_positions]
    if too_long:
        raise SettingsError(
            f"--gpt2-seq-lens {','.join(map(str, too_long))}: model {name!r} has "
            f"n_positions={n_positions}; use lengths <= {n_positions}"
        )
    if dataset not in ("embedded", "wikitext-2"):
        data.text_files(dataset)  # raises DataError naming the path when it does not exist
    grid_batches = batch_sizes or tuple(defaults["batch_sizes"])  # type: ignore[arg-type]
    try:  # phase defaults apply where the user left batch sizes / lengths unset
        gen = generation.resolve_options(
            torch.device(dev).type, prompt_lens, new_tokens, batch_sizes, grid_batches, n_positions
        )
        kd = distill.resolve_options(
            torch.device(dev).type, weights, teacher, student, kd_temperature, kd_alpha,
            batch_sizes, seq_lens, (grid_batches, lens),
        )  # fmt: skip
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return Settings(
        device=dev,
        model=name,
        weights="pretrained" if spec.pretrained else "random",
        dataset=dataset,
        batch_sizes=batch_sizes or tuple(defaults["batch_sizes"]),  # type: ignore[arg-type]
        seq_lens=lens,
        recipes=recipes or parse_recipes(str(defaults["optimizations"])),
        recipes_explicit=recipes is not None,
        rounds=rounds or int(defaults["rounds"]),  # type: ignore[call-overload]
        warmup=int(defaults["warmup"]) if warmup is None else warmup,  # type: ignore[call-overload]
        n_positions=n_positions,
        generate=gen,
        distill=kd,
        peak_tflops=peak_tflops,
        control=control,
    )


class BenchSession:
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

    # -- data ----------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = data.load_tokenizer(self.spec.load_from, self.spec.pretrained)
        return self._tokenizer

    def blocks(self, seq_len: int) -> torch.Tensor:
        if seq_len not in self._blocks:
            if self._text is None:
                self._text = data.load_text(self.settings.dataset)
            self._blocks[seq_len] = data.pack_blocks(self._text, self.tokenizer, seq_len)
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

    def spec_for(self, phase: str) -> models.ModelSpec:
        """The measured model of a phase: the student for distill, else --gpt2-model's."""
        return self.distill_options().student if phase == "distill" else self.spec

    def distill_options(self) -> distill.DistillOptions:
        if self.settings.distill is None:
            raise SettingsError("these settings were built without distillation options")
        return self.settings.distill

    def model(self, case: Case) -> torch.nn.Module:
        """The model for ``case``, built once per (recipe, phase) and freed before the next."""
        key = (case.recipe, case.phase)
        if key != self._model_key:
            self.free_model()
            spec = self.spec_for(case.phase)
            built = models.build(spec, case.recipe, self.config_of(spec))
            self._model_n_params = models.n_params(built)
            dev = self.settings.device
            self._model = optimizations.apply(built, case.recipe, dev, case.phase)
            self._model_key = key
        assert self._model is not None
        return self._model

    def teacher(self, case: Case) -> torch.nn.Module:
        """The distill case's teacher beside its student, in inference form (weights in the
        recipe's precision, eval mode); built after the student, freed with it."""
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
            built = models.build(opts.teacher, case.recipe, config)
            self._teacher = optimizations.apply(built, case.recipe, self.settings.device, "infer")
        return self._teacher

    def free_model(self) -> None:
        self._model, self._model_key, self._teacher = None, None, None
        models.release()

    # -- measuring -----------------------------------------------------------------------------
    def measure(
        self,
        benchmark: Any,
        case: Case,
        step: Callable[[], None],
        model: torch.nn.Module,
        tokens: int | None = None,
    ) -> dict[str, Any]:
        """Time ``step`` round by round and return the case's ``extra_info`` measurements.

        ``tokens``: tokens per step counted in ``tokens_per_s`` (default ``case.tokens``; the
        generate phase counts generated tokens); it also sizes the control workload.
        """
        s = self.settings
        n = self._model_n_params if model is self._model else models.n_params(model)
        tokens = case.tokens if tokens is None else tokens
        hooks = measure.RoundHooks(
            measure.memory_tracker(s.device),
            controls.control_for(model, s.device, case, tokens, n, s.control),
        )
        prepared = optimizations.prepare(step, case.recipe, model)  # compile_s, attn_kernel
        times = measure.run_pedantic(benchmark, step, hooks, s.rounds, s.warmup)
        info = self.describe(case, n) | prepared
        if times is not None:
            info.update(measure.round_metrics(times, case.batch_size, tokens, hooks))
            info.update(hooks.settled_memory(step))
        info |= self.flops_info(case, times)
        info["max_logit_diff"] = self.logit_diff(case, model)
        return info

    def flops_info(self, case: Case, times: list[float] | None) -> dict[str, Any]:
        """``flops_per_step``, ``achieved_tflops``, ``mfu``, ``peak_tflops`` (see flops.py)."""
        s = self.settings
        step_flops = self.step_flops(case)
        dtype = flops.compute_dtype(case.recipe.precision, case.recipe.int8, flops.tf32_matmul())
        peak = s.peak_tflops or flops.peak_tflops(s.device, device_name(s.device), dtype)
        return flops.flops_metrics(step_flops, times, peak)

    def step_flops(self, case: Case) -> int | None:
        """FLOPs of one step of ``case`` (flops.py); None for a model that is not GPT-2."""
        b, t = case.batch_size, case.seq_len
        if case.phase == "distill":
            opts = self.distill_options()
            teacher = flops.architecture(self.config_of(opts.teacher))
            student = flops.architecture(self.config_of(opts.student))
            if teacher is None or student is None:
                return None
            return flops.distill_flops(teacher, student, b, t)
        arch = flops.architecture(self.config)
        if arch is not None and case.phase == "generate":
            return flops.generate_flops(arch, b, t, int(dict(case.extra)["n"]))
        return flops.flops_per_step(arch, b, t, case.phase)

    def logit_diff(self, case: Case, model: torch.nn.Module) -> float | None:
        """Reduced-precision inference against the fp32 model on the case's batch, after the
        measured rounds (so the reference model never counts in the case's memory peak)."""
        if not optimizations.needs_logit_check(case.recipe, case.phase):
            return None
        recipe = optimizations.reference_recipe(case.recipe)
        reference = optimizations.apply(
            models.build(self.spec, recipe, self.config), recipe, self.settings.device, "infer"
        )
        try:
            return optimizations.max_logit_diff(model, reference, self.batch(case))
        finally:
            del reference
            models.release()
            measure.trim_heap()

    def describe(self, case: Case, n_params: int) -> dict[str, Any]:
        """What the case is: the keys that say which configuration produced the numbers."""
        return {
            "phase": case.phase,
            "model": self.settings.model,
            "weights": self.settings.weights,
            "optimization": case.recipe.id,
            "attn_implementation": case.recipe.attn_implementation,
            "dtype": case.recipe.dtype,
            "weights_dtype": str(optimizations.weights_dtype(case.recipe, case.phase)).split(".")[
                -1
            ],
            "device": self.settings.device,
            "device_name": device_name(self.settings.device),
            "batch_size": case.batch_size,
            "seq_len": case.seq_len,
            "n_params": n_params,
            "dataset": self.settings.dataset,
        } | self._phase_keys(case)

    def _phase_keys(self, case: Case) -> dict[str, Any]:
        """The generate and distill phases' own configuration keys."""
        if case.phase == "generate":
            return {"prompt_len": case.seq_len, "new_tokens": generation.new_tokens_of(case)}
        if case.phase != "distill":
            return {}
        d = self.distill_options()
        return {
            "model": d.student.name,
            "weights": "pretrained" if d.student.pretrained else "random",
            "teacher": d.teacher.name,
            "student": d.student.name,
            "temperature": d.temperature,
            "alpha": d.alpha,
        }


# ---------------------------------------------------------------------------------------------
# Grid, skips, failures, environment

OUT_OF_MEMORY: tuple[type[BaseException], ...] = (torch.OutOfMemoryError,)


def grid(phase: str, s: Settings) -> list[Case]:
    """The cases of one phase, recipe-major (each model is built once)."""
    if phase == "generate" and s.generate is not None:
        return generation.grid(s.recipes, s.generate)
    if phase == "distill" and s.distill is not None:
        return distill.grid(s.recipes, s.distill)
    return [Case(phase, r, b, t) for r in s.recipes for b in s.batch_sizes for t in s.seq_lens]


def skip_reason(case: Case, s: Settings) -> str | None:
    return optimizations.skip_reason(case.recipe, s.device, case.phase, s.recipes_explicit)


def out_of_memory_message(name: str, exc: BaseException) -> str:
    """One line: which case, how much memory it held and tried to get."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
    held = ""
    if torch.cuda.is_available():
        held = f"; {torch.cuda.max_memory_allocated() / measure.MB:.0f} MB peak allocated"
    return f"{name}: out of memory ({first[:240]}{held}); memory released, the grid goes on"


def environment(device: str) -> dict[str, Any]:
    """Versions, device and numerics settings that decide whether two results are comparable."""
    import datasets
    import transformers

    cuda = device.startswith("cuda")
    info: dict[str, Any] = {
        "device": device,
        "device_type": torch.device(device).type,
        "device_name": device_name(device),
        "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cuda_version": torch.version.cuda,
        "driver_version": _driver_version() if cuda else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "cpu_model": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "malloc": measure.malloc_setting(),
        "python": platform.python_version(),
    }
    if cuda:
        major, minor = torch.cuda.get_device_capability(torch.device(device))
        info["compute_capability"] = f"{major}.{minor}"
    return info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _driver_version() -> str | None:
    """The NVIDIA driver version through NVML, when pynvml is installed (CUDA torch wheels)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVML: the field stays empty rather than guessed
        return None
