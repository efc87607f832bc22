"""Where the cells of a matrix run: in this process, in local worker processes, on a
Ray cluster, or as Slurm jobs through submitit.

The driver (:func:`seqify.matrix.run_matrix`) plans the cells, groups those that share
one trained model (a :class:`CellGroup` runs in one worker, in order: its first cell
trains the model, the others reuse it from ``DIR/models/``), and hands the groups to
an executor. Workers run :func:`run_group` and return a :class:`CellOutcome` per cell;
only the driver writes ``DIR/index.sqlite``. A worker writes its results and
checkpoints atomically into the cell's folder (``seqify bench`` does), so a worker that
dies leaves either a finished cell or a ``train_state.pt`` that the next run resumes.

The engines are libraries, not a scheduler of ours: :mod:`concurrent.futures` with
``spawn`` processes for ``local``, ``ray`` for Ray, ``submitit`` for Slurm (and its
local executor, the same code path without the scheduler). Ray and submitit are an
optional extra (``pip install 'seqify[cluster]'``).
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from seqify.errors import ConfigError

__all__ = ["DIED", "CellGroup", "CellOutcome", "ExecutorSettings", "FileReporter", "InProcess", "LocalProcesses",
           "RayCells", "SlurmCells", "last_progress", "make_executor", "run_group"]

#: what a worker that died is recorded with (the next run of the matrix runs the cell again)
DIED = "worker died"


@dataclass
class CellGroup:
    """Cells that share one trained model, run in order in one worker.

    Args:
        requests: the cells' :class:`~seqify.bench.BenchRequest`, the training cell first.
        keys: the index key of each cell.
        label: a short name for progress lines.
        plugins: the driver's extra plugins (``Registry.extra_plugins``), registered in
            the worker beside the installed ones (a test's plugin, a notebook's).
    """

    requests: list[Any]
    keys: list[str]
    label: str
    plugins: list[Any] = field(default_factory=list)


@dataclass
class CellOutcome:
    """What one cell ended with: status "done", "not_applicable" or "failed"."""

    key: str
    status: str
    reason: str | None
    results: dict[str, Any] | None
    out_dir: str


@dataclass
class ExecutorSettings:
    """How ``seqify matrix`` dispatches its cells.

    Args:
        executor: "local" (this machine), "ray" or "slurm".
        jobs: cells run at once by "local" (1: in this process, one after another).
        threads: torch threads per cell (None: the machine's cores divided by ``jobs``).
        address: the Ray cluster (``ray.init(address=...)``; None: start a local one).
        cpus_per_cell, gpus_per_cell: resources one cell asks Ray or Slurm for.
        partition, time_min: the Slurm partition and time limit per cell (minutes).
        slurm_folder: where submitit writes its job files (default ``DIR/slurm``).
        slurm_cluster: submitit's cluster ("slurm"; "local" runs the same code path
            without a scheduler, as the tests do; None: submitit picks).
    """

    executor: str = "local"
    jobs: int = 1
    threads: int | None = None
    address: str | None = None
    cpus_per_cell: int = 1
    gpus_per_cell: float = 0
    partition: str | None = None
    time_min: int = 60
    slurm_folder: Path | None = None
    slurm_cluster: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.executor not in ("local", "ray", "slurm"):
            raise ConfigError(f"unknown executor {self.executor!r}: use local, ray or slurm")
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {self.jobs}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")


class FileReporter:
    """The reporter of a cell in a worker: progress lines appended to ``path`` (the
    driver shows the last one of each running cell). Steps are written at most every
    5% of a stage."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stage, self._total, self._done, self._next = "", None, 0, 0

    def _write(self, line: str) -> None:
        with open(self.path, "a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def stage(self, name: str, total: int | None = None) -> None:
        self._stage, self._total, self._done = name, total, 0
        self._next = max(1, (total or 0) // 20)
        self._write(name + (f" 0/{total}" if total else ""))

    def advance(self, n: int = 1, info: str = "") -> None:
        self._done += n
        if self._total and (self._done >= self._next or self._done == self._total):
            self._next = self._done + max(1, self._total // 20)
            self._write(f"{self._stage} {self._done}/{self._total} {info}".rstrip())

    def log(self, message: str) -> None:
        self._write(message)


def last_progress(out_dir: str | Path) -> str:
    """The last progress line a worker wrote for the cell in ``out_dir`` ("" if none)."""
    path = Path(out_dir) / "progress.log"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return ""
    return lines[-1].split(" ", 1)[-1] if lines else ""


def run_cell(cell_req: Any, key: str, registry: Any, rep: Any) -> CellOutcome:
    """One cell: applicability, then :func:`seqify.bench.run_bench`; a failure is an
    outcome with its reason, never an exception (the other cells go on)."""
    from seqify.bench import check_applicable, resolve_cell, run_bench
    from seqify.errors import NotApplicableError, SeqifyError

    status, reason, results = "done", None, None
    try:
        cell = resolve_cell(cell_req, registry)
        n = cell.names
        rep.log(f"cell {n['modality']} / {n['tokenizer']} / {n['orderer']} / {n['generator']}, seed {cell_req.seed}"
                + (f", tokenizer seed {cell_req.tokenizer_seed}" if cell_req.tokenizer_seed is not None else ""))
        reason = check_applicable(cell)
        if reason:
            raise NotApplicableError(reason)
        results = run_bench(cell_req, rep, registry).results
    except NotApplicableError as exc:
        status, reason = "not_applicable", str(exc)
    except (SeqifyError, RuntimeError, ValueError, FloatingPointError, OSError) as exc:
        status, reason = "failed", f"{type(exc).__name__}: {exc}"
        rep.log(f"cell failed: {reason}\n{traceback.format_exc(limit=3)}")
    return CellOutcome(key, status, reason, results, str(cell_req.out))


def _worker_registry(plugins: list[Any]) -> Any:
    from seqify.plugins import build_registry, get_registry, import_plugin

    if not plugins:
        return get_registry()
    return build_registry([import_plugin(p) if isinstance(p, str) else p for p in plugins], warn=False)


def run_group(group: CellGroup, threads: int | None = None, rep: Any = None, registry: Any = None
              ) -> list[CellOutcome]:
    """Run a group's cells in order (in a worker: each with a :class:`FileReporter` in
    its folder, and the registry rebuilt with the group's plugins). ``threads`` sets
    torch's thread count first."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    registry = registry or _worker_registry(group.plugins)
    outcomes = []
    for cell_req, key in zip(group.requests, group.keys):
        cell_rep = rep or FileReporter(Path(cell_req.out) / "progress.log")
        outcomes.append(run_cell(cell_req, key, registry, cell_rep))
    return outcomes


# ------------------------------------------------------------------ executors

#: called by an executor with each cell's outcome, in the driver; returns the groups it
#: releases (the cells that were waiting for this one's trained model)
OnOutcome = Callable[[CellOutcome], "list[CellGroup]"]
#: called with the groups running now, for progress lines
OnRunning = Callable[["list[CellGroup]"], None]


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def default_threads(jobs: int) -> int:
    """The cores this process may use, shared among ``jobs`` workers (at least 1 each)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // jobs)


class InProcess:
    """Cells one after another in this process, with the driver's reporter (today's
    ``seqify matrix``)."""

    def __init__(self, settings: ExecutorSettings, reporter: Any, registry: Any = None) -> None:
        self.threads, self.rep, self.registry = settings.threads, reporter, registry

    def run(self, groups: Iterable[CellGroup], on_outcome: OnOutcome, on_running: OnRunning | None = None) -> None:
        pending = list(groups)
        before = None
        if self.threads:
            import torch

            before = torch.get_num_threads()
        try:
            while pending:
                group = pending.pop(0)
                for outcome in run_group(group, self.threads, self.rep, self.registry):
                    pending.extend(on_outcome(outcome))
        finally:
            if before is not None:  # --threads holds for the matrix, not for the caller after it
                torch.set_num_threads(before)


def _die_with_parent() -> None:
    """Linux: this worker gets SIGTERM when its driver dies (a killed driver leaves no
    orphan training on; the next run resumes the cell from its train_state.pt)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn: Any, group: CellGroup, threads: int) -> None:
    """A local worker: the group, its outcomes sent back through ``conn``. Its thread
    count and GPU come in its environment (set by the driver around ``start``, so they
    hold before torch loads: unpickling the group's requests imports it)."""
    _die_with_parent()
    try:
        outcomes = run_group(group, threads)
    except BaseException as exc:  # noqa: BLE001 - an error run_cell does not expect fails the group, named
        outcomes = _died(group, f"{type(exc).__name__}: {exc}", prefix="worker error")
        traceback.print_exc()
    conn.send(outcomes)
    conn.close()


def _worker_run(group: CellGroup, threads: int) -> list[CellOutcome]:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return run_group(group, threads)


def _died(group: CellGroup, reason: str, prefix: str = DIED) -> list[CellOutcome]:
    return [CellOutcome(k, "failed", f"{prefix}: {reason}", None, str(r.out)) for r, k in zip(group.requests, group.keys)]


class _Environ:
    """``os.environ`` with ``values`` set inside the block (a spawned process copies it
    when it starts), restored after."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.saved = values, {}

    def __enter__(self) -> None:
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *_: Any) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _exit_reason(code: int | None) -> str:
    import signal

    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code} before reporting its cells"


class LocalProcesses:
    """``jobs`` cells at once, each group in its own ``spawn`` process on this machine:
    each worker gets ``threads`` torch threads (set before torch loads) and, when CUDA
    devices are visible, a device of its own. A worker that dies (killed, out of
    memory) fails its group's cells with the reason; the others go on."""

    def __init__(self, settings: ExecutorSettings, reporter: Any) -> None:
        self.jobs = settings.jobs
        self.threads = settings.threads or default_threads(settings.jobs)
        self.rep = reporter

    @staticmethod
    def _gpus() -> list[str]:
        """The devices this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (ids
        or MIG UUIDs); a worker gets one of these."""
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            return [d.strip() for d in visible.split(",") if d.strip()]
        import sys

        torch = sys.modules.get("torch")  # never load torch here only to count devices
        try:
            return [str(i) for i in range(torch.cuda.device_count())] if torch is not None else []
        except Exception:
            return []

    def run(self, groups: Iterable[CellGroup], on_outcome: OnOutcome, on_running: OnRunning | None = None) -> None:
        import multiprocessing as mp
        from multiprocessing.connection import wait

        ctx = mp.get_context("spawn")
        pending = list(groups)
        gpus = self._gpus()
        running: dict[Any, tuple[Any, Any, CellGroup, str | None]] = {}  # sentinel -> (process, conn, group, gpu)
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    group = pending.pop(0)
                    env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
                    gpu = None
                    if gpus:  # the least used of the visible devices
                        load = {g: 0 for g in gpus}
                        for *_, used in running.values():
                            load[used] += 1
                        gpu = min(gpus, key=lambda g: load[g])
                        env["CUDA_VISIBLE_DEVICES"] = gpu
                    parent, child = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_worker_main, args=(child, group, self.threads),
                                       name=f"seqify-{group.label}", daemon=False)
                    with _Environ(env):
                        proc.start()
                    child.close()
                    running[proc.sentinel] = (proc, parent, group, gpu)
                if on_running:
                    on_running([g for _, _, g, _ in running.values()])
                ready = wait([*running, *(c for _, c, _, _ in running.values())], timeout=15)
                for sentinel, (proc, conn, group, gpu) in list(running.items()):
                    if sentinel not in ready and conn not in ready:
                        continue
                    outcomes = None
                    try:
                        if conn.poll():
                            outcomes = conn.recv()
                    except (EOFError, OSError):  # the worker closed its end without sending: it is ending
                        pass
                    proc.join(timeout=60)
                    if proc.is_alive():  # sent (or closed) but does not exit: never let it hold its core or GPU
                        proc.kill()
                        proc.join(timeout=10)
                    del running[sentinel]
                    conn.close()
                    for outcome in outcomes if outcomes is not None else _died(group, _exit_reason(proc.exitcode)):
                        pending.extend(on_outcome(outcome))
        finally:
            for proc, conn, _, _ in running.values():  # the driver stops: so do its workers
                proc.terminate()
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()


class RayCells:
    """Each group a Ray task with ``cpus_per_cell`` CPUs and ``gpus_per_cell`` GPUs, on
    the cluster at ``address`` (None: a local Ray started for this matrix). A task whose
    worker dies fails its cells with Ray's reason."""

    def __init__(self, settings: ExecutorSettings, reporter: Any) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs the ray package: pip install 'seqify[cluster]'") from None
        self.ray, self.settings = ray, settings

    def run(self, groups: Iterable[CellGroup], on_outcome: OnOutcome, on_running: OnRunning | None = None) -> None:
        ray, s = self.ray, self.settings
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=s.address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        threads = s.threads or s.cpus_per_cell
        remote = ray.remote(num_cpus=s.cpus_per_cell, num_gpus=s.gpus_per_cell, max_retries=0)(_worker_run)
        task = remote.options(runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}})
        refs = {task.remote(g, threads): g for g in groups}
        try:
            while refs:
                if on_running:
                    on_running(list(refs.values()))
                done, _ = ray.wait(list(refs), num_returns=1, timeout=15)
                for ref in done:
                    group = refs.pop(ref)
                    try:
                        outcomes = ray.get(ref)
                    except Exception as exc:  # RayTaskError, WorkerCrashedError, OutOfMemoryError...
                        outcomes = _died(group, f"{type(exc).__name__}: {_first_line(exc)}")
                    for outcome in outcomes:
                        for follow in on_outcome(outcome):
                            refs[task.remote(follow, threads)] = follow
        finally:
            for ref in refs:  # the driver stops: its cells must not run on unrecorded
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()


class SlurmCells:
    """Each group a Slurm job submitted through submitit (partition, time limit, CPUs and
    GPUs per cell); ``slurm_cluster="local"`` runs the jobs as local processes through
    submitit's own local executor. A job that fails, is preempted or runs out of time
    fails its cells with submitit's reason."""

    def __init__(self, settings: ExecutorSettings, reporter: Any, folder: Path) -> None:
        try:
            import submitit
        except ImportError:
            raise ConfigError("--executor slurm needs the submitit package: pip install 'seqify[cluster]'") from None
        self.submitit, self.settings, self.folder = submitit, settings, Path(settings.slurm_folder or folder)

    def run(self, groups: Iterable[CellGroup], on_outcome: OnOutcome, on_running: OnRunning | None = None) -> None:
        s = self.settings
        ex = self.submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=s.slurm_cluster)
        threads = s.threads or s.cpus_per_cell
        params: dict[str, Any] = {"timeout_min": s.time_min, "cpus_per_task": s.cpus_per_cell,
                                  "name": "seqify-cell"}
        if s.gpus_per_cell:
            params["gpus_per_node"] = int(s.gpus_per_cell)
        if s.partition:
            params["slurm_partition"] = s.partition
        ex.update_parameters(**params, **s.extra)
        jobs = {ex.submit(_worker_run, g, threads): g for g in groups}
        try:
            self._wait(jobs, ex, threads, on_outcome, on_running)
        finally:
            for job in jobs:  # the driver stops: its cells must not run on unrecorded
                job.cancel(check=False)

    @staticmethod
    def _wait(jobs: dict, ex: Any, threads: int, on_outcome: OnOutcome, on_running: OnRunning | None) -> None:
        shown = 0.0
        while jobs:
            if on_running and time.time() - shown > 15:
                on_running(list(jobs.values()))
                shown = time.time()
            for job in [j for j in jobs if j.done()]:
                group = jobs.pop(job)
                try:
                    outcomes = job.result()
                except Exception as exc:  # FailedJobError, UncompletedJobError (killed, preempted, timed out)
                    outcomes = _died(group, f"{type(exc).__name__}: {_first_line(exc)}")
                for outcome in outcomes:
                    for follow in on_outcome(outcome):
                        jobs[ex.submit(_worker_run, follow, threads)] = follow
            if jobs:
                time.sleep(1.0)


def make_executor(settings: ExecutorSettings, reporter: Any, out: Path, registry: Any = None):
    """The executor ``settings`` name (with ``jobs == 1``, ``local`` runs in-process,
    with ``registry``)."""
    if settings.executor == "ray":
        return RayCells(settings, reporter)
    if settings.executor == "slurm":
        return SlurmCells(settings, reporter, Path(out) / "slurm")
    if settings.jobs == 1:
        return InProcess(settings, reporter, registry)
    return LocalProcesses(settings, reporter)
