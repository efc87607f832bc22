"""The ``seqify`` command: a thin layer over :mod:`seqify.bench` and :mod:`seqify.matrix`.

Importing this module does not import torch: ``seqify --help`` and ``seqify list``
stay fast. Heavy modules are imported inside the commands that need them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from seqify.errors import ConfigError, SeqifyError
from seqify.plugins import get_registry

app = typer.Typer(
    help="Cross-evaluate tokenizations and generation orders for autoregressive models of non-sequential data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False)
err_console = Console(stderr=True)


def _names(kind: str) -> str:
    try:
        return ", ".join(get_registry().names(kind))
    except Exception:  # never let --help fail
        return "see `seqify list`"


def _split(names: Optional[str]) -> Optional[list[str]]:
    """A comma-separated option as a list of names (None when not given)."""
    return [x.strip() for x in names.split(",") if x.strip()] if names else None


def _seeds(text: Optional[str], option: str) -> Optional[list[int]]:
    """A comma-separated list of seeds (``--seeds 0,1,2``) as integers (None when not given)."""
    names = _split(text)
    if names is None:
        return None
    try:
        return [int(x) for x in names]
    except ValueError:
        _fail(ConfigError(f"{option} {text!r}: expected comma-separated integers, e.g. 0,1,2"))


_TOKENIZER_SEED_HELP = "Seeds fitting a learned tokenizer (a VQ codebook), apart from the model (default: --seed)."
_TOKENIZER_SEEDS_HELP = "Comma-separated tokenizer seeds, each its own cell (default: the run seed)."
_SEEDS_HELP = "Comma-separated run seeds, each its own cell; summary.md gives mean and 95% interval over them."
_TOKENIZER_STATE_HELP = ("Load this tokenizer state (a run's tokenizer_state.pt) instead of fitting: the same "
                         "tokenizer on another machine.")


_TEMPERATURE = typer.Option(None, "--temperature", help="Sampling temperature (0: greedy; default: the budget's, 1 "
                            "for most modalities).")
_TOP_K = typer.Option(None, "--top-k", help="Draw each value among the k most likely only (default: off).")
_TOP_P = typer.Option(None, "--top-p", help="Nucleus sampling: draw among the smallest set of most likely values "
                      "holding this probability, in (0, 1] (default: off).")
_GUIDANCE = typer.Option(None, "--guidance", help="Classifier-free guidance scale s of a class-conditional model: "
                         "logits (1+s) cond - s uncond, as VAR (default: off).")
_SCHEDULE = typer.Option(None, "--guidance-schedule", help="constant | linear (from 0 at the first step or block to "
                         "--guidance at the last, VAR's ramp; default: constant).")
_N_SAMPLES = typer.Option(None, "--n-samples", help="Items generated (or completed) per cell for the sample metrics "
                          "(default: the budget's; MNIST at the quick budget: 500, and 2,000 gives an FD stable to "
                          "about its standard error, benchmarks/RESULTS.md).")
_CONDITION = typer.Option(False, "--condition", help="Train a class-conditional generator (generator.condition = true) "
                          "on the classes the modality declares (e.g. the MNIST digit), with 10% label dropout.")


def _sampling(temperature: Optional[float], top_k: Optional[int], top_p: Optional[float], guidance: Optional[float],
              schedule: Optional[str], n_samples: Optional[int] = None) -> dict[str, Any]:
    """The sampling options given on the command line, as ``eval`` settings."""
    given = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "guidance": guidance,
             "guidance_schedule": schedule, "n_samples": n_samples}
    return {k: v for k, v in given.items() if v is not None}


def _overrides(sampling: dict[str, Any], condition: bool) -> dict[str, Any]:
    """Configuration layered over the budget and --config: the sampling options and --condition."""
    out: dict[str, Any] = {}
    if sampling:
        out["eval"] = sampling
    if condition:
        out["generator"] = {"condition": True}
    return out


def _single_process(command: str) -> None:
    """Refuse to run ``command`` under torchrun: it runs cells one after another."""
    from seqify.distributed import env_world_size

    if env_world_size() > 1:
        _fail(ConfigError(f"`seqify {command}` runs its cells one after another in one process; under torchrun, "
                          "launch each cell with `seqify bench` (docs/distributed.md)"))


def _fail(exc: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command("list")
def list_components() -> None:
    """Show every registered component with its plugin of origin."""
    reg = get_registry()
    table = Table(title="seqify components")
    for col in ("kind", "name", "modality", "plugin", "description"):
        table.add_column(col, overflow="fold")
    for kind in ("modality", "tokenizer", "orderer", "generator"):
        for info in reg.infos(kind):
            table.add_row(kind, info.name, info.modality or "", info.plugin, info.description)
    console.print(table)
    for name, why in reg.failed_plugins.items():
        console.print(f"[yellow]plugin {name!r} not loaded:[/] {why}")


class RichReporter:
    """A rich progress bar per stage on a terminal; plain timestamped lines otherwise
    (logs, CI), one at each stage and every tenth of a stage."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.live = err_console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=err_console, transient=False,
        )
        self.task = None
        self._plain: dict[str, Any] = {}

    def __enter__(self):
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.progress.stop()

    def stage(self, name: str, total: int | None = None) -> None:
        import time

        if not self.live:
            self._plain = {"name": name, "total": total, "done": 0, "next": 0.1, "t0": time.perf_counter()}
            err_console.print(f"[{time.strftime('%H:%M:%S')}] {name}" + (f" ({total})" if total else ""), highlight=False)
            return
        if self.task is not None:
            t = self.progress.tasks[-1]
            if t.total is None:
                self.progress.update(self.task, total=1, completed=1)
        self.task = self.progress.add_task(name, total=total, info="")

    def advance(self, n: int = 1, info: str = "") -> None:
        import time

        if not self.live:
            p = self._plain
            if not p or not p.get("total"):
                return
            p["done"] += n
            if p["done"] >= p["next"] * p["total"]:
                p["next"] += 0.1
                err_console.print(f"[{time.strftime('%H:%M:%S')}]   {p['name']}: {p['done']}/{p['total']} "
                                  f"({time.perf_counter() - p['t0']:.0f} s) {info}", highlight=False)
            return
        if self.task is not None:
            self.progress.update(self.task, advance=n, info=info)

    def log(self, message: str) -> None:
        (self.progress.console if self.live else err_console).print(message, highlight=False, soft_wrap=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)


def _seed_text(row: dict) -> str:
    """"0" for run seed 0 with the tokenizer fitted with it, "0, tokenizer 2" otherwise."""
    seed, fit = row.get("seed"), row.get("tokenizer_seed")
    return f"{seed}" if fit in (seed, None, "") else f"{seed}, tokenizer {fit}"


def results_table(results: dict) -> Table:
    t = Table(title=f"{results['modality']} / {results['dataset']} / {results['tokenizer']} / "
              f"{results['orderer']} / {results['generator']} (seed {results['seed']}, {results['device']})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    m = results["modelability"]
    for k in ("nats_per_token", "nats_per_item", "bits_per_item", "top1_accuracy"):
        t.add_row(f"modelability: {k}", _fmt(m[k]))
    t.add_row("modelability: kind", f"{m['kind']} ({m['n_items']} test items)")
    for k, v in results["metrics"].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            t.add_row(k, _fmt(v))
    fit = results.get("tokenizer_state")
    if fit:
        t.add_row("tokenizer state", fit["source"] + (f", seed {fit['seed']}" if fit.get("seed") is not None else ""))
    t.add_row("training", f"{results['training'].get('steps')} steps, {results['timings'].get('train_s', 0):.1f} s")
    t.add_row("total time", f"{results['timings']['total_s']:.1f} s")
    return t


@app.command()
def bench(
    modality: str = typer.Option(..., "--modality", "-m", help=f"Modality: {_names('modality')}."),
    orderer: str = typer.Option(..., "--orderer", "-o", help=f"Orderer: {_names('orderer')}."),
    out: Path = typer.Option(..., "--out", help="Output folder (results.json, checkpoint.pt, pictures)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset of the modality (default: its first)."),
    data: Optional[Path] = typer.Option(None, "--data", help="A data file, for datasets no package ships."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", "-t", help=f"Tokenizer: {_names('tokenizer')} (per modality)."),
    generator: Optional[str] = typer.Option(None, "--generator", "-g", help=f"Generator: {_names('generator')} (default: the highest-priority generator the orderer can use, "
                                                                    "e.g. causal for static orders, masked for adaptive or learned ones)."),
    budget: str = typer.Option("quick", "--budget", help="smoke (seconds) | quick (minutes on a CPU) | full (one GPU)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (overrides the budget)."),
    seed: int = typer.Option(0, "--seed", help="Seeds splits, training, orders and sampling."),
    tokenizer_seed: Optional[int] = typer.Option(None, "--tokenizer-seed", help=_TOKENIZER_SEED_HELP),
    tokenizer_state: Optional[Path] = typer.Option(None, "--tokenizer-state", help=_TOKENIZER_STATE_HELP),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/YAML/JSON file with any configuration field."),
    train_orderer: Optional[str] = typer.Option(None, "--train-orderer", help="Train under this orderer instead (e.g. random), then score and sample with --orderer."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Resume an interrupted run from DIR/train_state.pt (the same command and seed); --no-resume trains from the start."),
    condition: bool = _CONDITION,
    temperature: Optional[float] = _TEMPERATURE,
    top_k: Optional[int] = _TOP_K,
    top_p: Optional[float] = _TOP_P,
    guidance: Optional[float] = _GUIDANCE,
    guidance_schedule: Optional[str] = _SCHEDULE,
    n_samples: Optional[int] = _N_SAMPLES,
) -> None:
    """Train, measure modelability on the test split, generate, and write DIR/results.json.

    Interrupted runs resume when the same command is run again. For several GPUs,
    launch it under torchrun: `torchrun --standalone --nproc-per-node=N --no-python
    seqify bench ...` (docs/distributed.md).
    """
    from seqify.bench import BenchRequest, Reporter, run_bench

    req = BenchRequest(modality=modality, orderer=orderer, out=out, dataset=dataset, data=data, tokenizer=tokenizer,
                       generator=generator, budget=budget, steps=steps, seed=seed, device=device, config_file=config,
                       train_orderer=train_orderer, resume=resume, tokenizer_seed=tokenizer_seed,
                       tokenizer_state=tokenizer_state,
                       overrides=_overrides(_sampling(temperature, top_k, top_p, guidance, guidance_schedule, n_samples),
                                            condition))
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone reports
    try:
        with (RichReporter() if main_process else contextlib.nullcontext(Reporter())) as rep:
            result = run_bench(req, rep)
    except SeqifyError as exc:
        _fail(exc)
    if result.results is None:
        return
    console.print(results_table(result.results))
    console.print(f"results: {result.results_path}")


_JOBS = typer.Option(1, "--jobs", "-j", help="Cells run at once on this machine, each in a worker process with its share of "
                     "the CPU threads (and its own GPU when there are several); 1: one after another in this process.")
_THREADS = typer.Option(None, "--threads", help="Torch threads per cell (default: the cores divided by --jobs).")
_EXECUTOR = typer.Option("local", "--executor", help="local | ray | slurm (ray and slurm need the optional 'cluster' extra of seqify).")
_ADDRESS = typer.Option(None, "--address", help="Ray cluster address (ray.init(address=...)); default: a Ray started here.")
_CPUS = typer.Option(1, "--cpus-per-cell", help="CPUs each cell asks Ray or Slurm for.")
_GPUS = typer.Option(0.0, "--gpus-per-cell", help="GPUs each cell asks Ray or Slurm for.")
_PARTITION = typer.Option(None, "--partition", help="Slurm partition.")
_TIME = typer.Option(60, "--time-limit", help="Slurm time limit per cell, minutes.")
_CLUSTER = typer.Option(None, "--slurm-cluster", help="submitit cluster: slurm, or local (the same code path without a scheduler).")


def _execution(jobs: int, threads: Optional[int], executor: str, address: Optional[str], cpus: int, gpus: float,
               partition: Optional[str], time_limit: int, cluster: Optional[str]) -> Any:
    from seqify.executors import ExecutorSettings

    try:
        return ExecutorSettings(executor=executor, jobs=jobs, threads=threads, address=address, cpus_per_cell=cpus,
                                gpus_per_cell=gpus, partition=partition, time_min=time_limit, slurm_cluster=cluster)
    except ConfigError as exc:
        _fail(exc)


@app.command()
def matrix(
    modalities: str = typer.Option(..., "--modalities", help="Comma-separated modalities."),
    orderers: str = typer.Option(..., "--orderers", help="Comma-separated orderers."),
    out: Path = typer.Option(..., "--out", help="Output folder (index.sqlite, comparison.md/.csv, heatmap.png, cells/)."),
    generators: Optional[str] = typer.Option(None, "--generators", help="Comma-separated generators (default: each orderer's default)."),
    tokenizers: Optional[str] = typer.Option(None, "--tokenizers", help="Comma-separated tokenizers (default: each modality's default)."),
    budget: str = typer.Option("quick", "--budget", help="smoke | quick | full."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (overrides the budget)."),
    seed: int = typer.Option(0, "--seed"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help=_SEEDS_HELP),
    tokenizer_seeds: Optional[str] = typer.Option(None, "--tokenizer-seeds", help=_TOKENIZER_SEEDS_HELP),
    tokenizer_state: Optional[Path] = typer.Option(None, "--tokenizer-state", help=_TOKENIZER_STATE_HELP),
    device: str = typer.Option("auto", "--device"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/YAML/JSON configuration for every cell."),
    train_orderer: Optional[str] = typer.Option(None, "--train-orderer", help="Train every cell under this orderer (cells then share one model per generator)."),
    jobs: int = _JOBS,
    threads: Optional[int] = _THREADS,
    executor: str = _EXECUTOR,
    address: Optional[str] = _ADDRESS,
    cpus_per_cell: int = _CPUS,
    gpus_per_cell: float = _GPUS,
    partition: Optional[str] = _PARTITION,
    time_limit: int = _TIME,
    slurm_cluster: Optional[str] = _CLUSTER,
    condition: bool = _CONDITION,
    temperature: Optional[float] = _TEMPERATURE,
    top_k: Optional[int] = _TOP_K,
    top_p: Optional[float] = _TOP_P,
    guidance: Optional[float] = _GUIDANCE,
    guidance_schedule: Optional[str] = _SCHEDULE,
    n_samples: Optional[int] = _N_SAMPLES,
) -> None:
    """Run every compatible cell, resuming from DIR/index.sqlite; write a comparison table and heatmap."""
    from seqify.matrix import MatrixRequest, run_matrix

    _single_process("matrix")

    req = MatrixRequest(modalities=_split(modalities), orderers=_split(orderers), out=out,
                        generators=_split(generators), tokenizers=_split(tokenizers), budget=budget, steps=steps, seed=seed, device=device, config_file=config,
                        train_orderer=train_orderer, seeds=_seeds(seeds, "--seeds"),
                        tokenizer_seeds=_seeds(tokenizer_seeds, "--tokenizer-seeds"), tokenizer_state=tokenizer_state,
                        overrides=_overrides(_sampling(temperature, top_k, top_p, guidance, guidance_schedule,
                                                       n_samples), condition),
                        execution=_execution(jobs, threads, executor, address, cpus_per_cell, gpus_per_cell, partition,
                                             time_limit, slurm_cluster))
    try:
        with RichReporter() as rep:
            result = run_matrix(req, rep)
    except SeqifyError as exc:
        _fail(exc)
    t = Table(title=f"seqify matrix ({result.ran} run, {result.reused} read from the index)")
    for col in ("modality", "tokenizer", "orderer", "generator", "seed", "status", "nats/token", "bits/item",
                "headline / reason"):
        t.add_column(col, overflow="fold")
    for r in result.rows:
        t.add_row(r["modality"], r["tokenizer"], r["orderer"], r["generator"], _seed_text(r), r["status"],
                  _fmt(r.get("nats_per_token", "")), _fmt(r.get("bits_per_item", "")), r.get("headline") or r["reason"])
    console.print(t)
    console.print(f"comparison: {out / 'comparison.md'}")
    if "summary_markdown" in result.files:
        console.print(f"over seeds: {out / result.files['summary_markdown']}")


@app.command()
def modelability(
    modality: str = typer.Option(..., "--modality", "-m", help=f"Modality: {_names('modality')}."),
    tokenizers: str = typer.Option(..., "--tokenizers", help="Comma-separated tokenizers of the modality to compare."),
    out: Path = typer.Option(..., "--out", help="Output folder (modelability.md/.csv/.png, cells/, index.sqlite)."),
    orderer: str = typer.Option("raster", "--orderer", "-o", help="One orderer for every tokenization."),
    generator: Optional[str] = typer.Option(None, "--generator", "-g", help="One generator (default: the orderer's default)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset of the modality (default: its first)."),
    data: Optional[Path] = typer.Option(None, "--data", help="A data file or folder, for datasets that read one."),
    budget: str = typer.Option("quick", "--budget", help="smoke | quick | full."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (overrides the budget)."),
    seed: int = typer.Option(0, "--seed"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help=_SEEDS_HELP),
    tokenizer_seeds: Optional[str] = typer.Option(None, "--tokenizer-seeds", help=_TOKENIZER_SEEDS_HELP),
    tokenizer_state: Optional[Path] = typer.Option(None, "--tokenizer-state", help=_TOKENIZER_STATE_HELP),
    device: str = typer.Option("auto", "--device"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/YAML/JSON configuration for every cell."),
    jobs: int = _JOBS,
    threads: Optional[int] = _THREADS,
    executor: str = _EXECUTOR,
    address: Optional[str] = _ADDRESS,
    cpus_per_cell: int = _CPUS,
    gpus_per_cell: float = _GPUS,
    partition: Optional[str] = _PARTITION,
    time_limit: int = _TIME,
    slurm_cluster: Optional[str] = _CLUSTER,
    n_samples: Optional[int] = _N_SAMPLES,
) -> None:
    """Train each tokenization under one budget; tabulate and plot bits per item against reconstruction error."""
    from seqify.modelability import ModelabilityRequest, run_modelability

    _single_process("modelability")

    req = ModelabilityRequest(modality=modality, tokenizers=_split(tokenizers),
                              out=out, orderer=orderer, generator=generator, dataset=dataset, data=data, budget=budget,
                              steps=steps, seed=seed, device=device, config_file=config,
                              seeds=_seeds(seeds, "--seeds"), tokenizer_state=tokenizer_state,
                              tokenizer_seeds=_seeds(tokenizer_seeds, "--tokenizer-seeds"),
                              overrides=_overrides(_sampling(None, None, None, None, None, n_samples), False),
                              execution=_execution(jobs, threads, executor, address, cpus_per_cell, gpus_per_cell,
                                                   partition, time_limit, slurm_cluster))
    try:
        with RichReporter() as rep:
            result = run_modelability(req, rep)
    except SeqifyError as exc:
        _fail(exc)
    t = Table(title=f"seqify modelability: {modality} under {orderer!r}")
    for col in ("tokenizer", "seed", "status", "bits/item", "nats/token", "tokens/item", "top-1", "reconstruction",
                "headline / reason"):
        t.add_column(col, overflow="fold")
    for r in result.rows:
        recon = f"{r['reconstruction_metric']}={_fmt(r['reconstruction_error'])}" if r["reconstruction_metric"] else ""
        t.add_row(r["tokenizer"], _seed_text(r), r["status"], _fmt(r["bits_per_item"]), _fmt(r["nats_per_token"]),
                  _fmt(r["tokens_per_item"]), _fmt(r["top1_accuracy"]), recon, r["headline"] or r["reason"])
    console.print(t)
    console.print(f"table: {out / 'modelability.md'}   plot: {out / 'modelability.png'}")
    if "summary_markdown" in result.files:
        console.print(f"over seeds: {out / result.files['summary_markdown']}")


@app.command()
def sample(
    run: Path = typer.Option(..., "--run", help="The --out folder of a finished `seqify bench` run."),
    out: Path = typer.Option(..., "--out", help="Where to write the samples, pictures and sample_results.json."),
    n: Optional[int] = typer.Option(None, "--n", help="Items to generate (default: as in the run)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed (default: the run's seed)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature (0: greedy)."),
    top_k: Optional[int] = _TOP_K,
    top_p: Optional[float] = _TOP_P,
    guidance: Optional[float] = _GUIDANCE,
    guidance_schedule: Optional[str] = _SCHEDULE,
    score: Optional[int] = typer.Option(None, "--score", help="Also score modelability on the first N test items."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Evaluate on another dataset of the run's modality "
                                          "(default: the one it was trained on)."),
    data: Optional[Path] = typer.Option(None, "--data", help="The file or folder of --dataset."),
) -> None:
    """Generate more items from a trained run's checkpoint, without retraining (rescore it with --score, or
    complete and score another dataset of the same modality with --dataset / --data)."""
    from seqify.bench import run_sample

    try:
        with RichReporter() as rep:
            result = run_sample(run, out, n=n, seed=seed, device=device, temperature=temperature, score=score,
                                reporter=rep, dataset=dataset, data=data,
                                sampling=_sampling(None, top_k, top_p, guidance, guidance_schedule))
    except SeqifyError as exc:
        _fail(exc)
    evaluated = result.results["evaluated_on"]["dataset"]
    trained = result.results["trained_on"]["dataset"]
    t = Table(title=f"seqify sample from {run}" + (f" (trained on {trained}, evaluated on {evaluated})"
                                                   if evaluated != trained else ""))
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in result.results.get("modelability", {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            t.add_row(f"modelability: {k}", _fmt(v))
    for k, v in result.results["metrics"].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            t.add_row(k, _fmt(v))
    console.print(t)
    console.print(f"results: {out / 'sample_results.json'}")


def main() -> None:
    # torch's OpenMP threads spin while waiting by default: beside another busy process
    # on a small CPU a training step then runs several times slower. Passive waiting
    # (set before torch loads) mostly cures it; a value the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        app()
    except SeqifyError as exc:  # errors raised while building --help text, for example
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
