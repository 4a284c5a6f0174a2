"""Running a grid, resumably: every job through Ray (a local ``ray.init()`` or an existing cluster's
``address``) or a process pool, each finished job's result saved as it completes.

Layout of a grid's output folder ``OUT`` (:func:`run_grid`):

* ``OUT/results/<job>.json`` — the result of one finished job (:func:`fcpo.reproduction.run_job`),
  written atomically on the driver as soon as the job returns; a re-run skips every job found here.
* ``OUT/results/<job>.error.txt`` — the traceback of a job that failed (removed once it succeeds).
* ``OUT/jobs/<job>/`` — the run folder of a trained job (log, checkpoint, TensorBoard) when kept;
  a folder without a result is an interrupted attempt and is replaced when the job runs again.

Data on a Ray cluster: the driver builds each job's :class:`fcpo.envs.EnvData` once (load, split,
embed), ``ray.put`` s it, and every task seeds its worker's :func:`fcpo.envs.get_env_data` memo from
that object before the job starts, so workers on other nodes need no data folder.

Fault tolerance (Ray only): a task whose worker process dies is retried (``max_retries``); a job
that raises is reported with its traceback and the grid goes on with the rest.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from fcpo.reproduction.grid import GridSpec, job_config, job_name, run_job

RESULTS_DIR = "results"  # OUT/results/<job>.json: one finished job
RUNS_DIR = "jobs"  # OUT/jobs/<job>/: the run folder of one trained job
HOLD_ENV = "FCPO_JOB_HOLD_DIR"  # test hook, see run_job_attempt


@dataclass
class JobFailure:
    """A job that raised (or whose worker died more often than the retries allow)."""

    name: str
    job: dict
    traceback: str


@dataclass
class GridRun:
    """What :func:`dispatch` / :func:`run_grid` did: ``results`` in grid order (finished jobs only)."""

    results: list[dict] = field(default_factory=list)
    failures: list[JobFailure] = field(default_factory=list)
    reused: int = 0  # results read back from OUT/results (not run again)
    ran: int = 0  # jobs run by this call that finished
    out: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


def grid_digest(spec: GridSpec) -> str:
    """8 hex digits of the SHA-256 of the spec's fields (canonical JSON): the same flags, the same digest."""
    from fcpo.runs import jsonable

    text = json.dumps(jsonable(asdict(spec)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def default_out(spec: GridSpec, root: str | Path = "runs") -> Path:
    """``runs/bench-<dataset>-<grid_digest>``: deterministic, so re-running a command resumes its grid."""
    return Path(root) / f"bench-{spec.dataset}-{grid_digest(spec)}"


# ------------------------------------------------------------------ one job on a worker
def seed_env_data(*env_data) -> None:
    """Put ``EnvData`` shipped from the driver into this process's :func:`fcpo.envs.get_env_data` memo."""
    from fcpo.envs import env_data as memo

    with memo._LOCK:  # the memo has no public setter; keys are the data-defining arguments only
        for data in env_data:
            memo._CACHE.setdefault(data.key, data)


def _hold_for_tests(job: dict) -> None:
    """Test hook: with ``$FCPO_JOB_HOLD_DIR`` set, write ``<dir>/<job>.<pid>.pid`` and wait while
    ``<dir>/<job>.hold`` exists (at most 120 s), so a test can kill this worker mid-job by PID."""
    folder = os.environ.get(HOLD_ENV)
    if not folder:
        return
    name = job_name(job)
    Path(folder, f"{name}.{os.getpid()}.pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while Path(folder, f"{name}.hold").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def run_job_attempt(job: dict, *env_data) -> dict:
    """One attempt at ``job`` on a worker: seed the data memo with ``env_data``, drop the run folder a
    killed earlier attempt left behind, then :func:`fcpo.reproduction.run_job`."""
    seed_env_data(*env_data)
    _hold_for_tests(job)
    if job.get("run_dir") and Path(job["run_dir"]).exists():
        shutil.rmtree(job["run_dir"])
    return run_job(job)


def job_env_data(job: dict):
    """The :class:`fcpo.envs.EnvData` ``job``'s env replays (built or loaded once, memoised)."""
    return job_config(job).env_spec().make_vector(1, mode="train").env_data


# ------------------------------------------------------------------ dispatch
def dispatch(jobs: list[dict], workers: int = 2, address: str | None = None, use_ray: bool | None = None,
             progress: bool = True, *, on_result: Callable[[int, dict], None] | None = None,
             on_failure: Callable[[int, JobFailure], None] | None = None, max_retries: int = 3,
             done_before: int = 0) -> GridRun:
    """Run ``jobs`` through Ray (``use_ray`` None: when installed) or ``workers`` processes
    (1: in this process); every job runs even when others fail.

    ``on_result(i, result)`` / ``on_failure(i, failure)`` are called on the driver as job ``i``
    finishes; each failure is also printed with its traceback.  ``address``: an existing Ray
    cluster (``127.0.0.1:6379``, ``auto``, ``ray://head:10001``); without it a local Ray instance
    with ``workers`` CPUs.  ``max_retries``: Ray retries of a task whose worker process died.
    ``done_before``: jobs already finished elsewhere (the progress bar starts there).
    """
    from tqdm import tqdm

    if use_ray is None:
        use_ray = importlib.util.find_spec("ray") is not None
    if use_ray and importlib.util.find_spec("ray") is None:
        raise ValueError("--ray yes: Ray is not installed (pip install 'fcpo[dist]')")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if address and not use_ray:
        raise ValueError(f"--address {address}: a Ray cluster address, but the grid would not run on Ray "
                         "(--ray no, or Ray is not installed: pip install 'fcpo[dist]')")
    kind = "ray" if use_ray else ("processes" if workers > 1 and len(jobs) > 1 else "in-process")
    results: list[dict | None] = [None] * len(jobs)
    failures: list[JobFailure] = []
    bar = tqdm(total=len(jobs) + done_before, initial=done_before, desc=f"grid ({kind})", unit="job",
               disable=not progress, file=sys.stderr)

    def finished(i: int, result: dict) -> None:
        results[i] = result
        if on_result is not None:
            on_result(i, result)
        bar.update(1)

    def failed(i: int, text: str) -> None:
        failure = JobFailure(job_name(jobs[i]), jobs[i], text)
        failures.append(failure)
        tqdm.write(f"grid: job {failure.name} failed; the grid goes on with the others\n{text.rstrip()}",
                   file=sys.stderr)
        if on_failure is not None:
            on_failure(i, failure)
        bar.update(1)

    try:
        if use_ray:
            _run_ray(jobs, workers, address, max_retries, finished, failed)
        elif kind == "processes":
            _run_processes(jobs, workers, finished, failed)
        else:
            for i, job in enumerate(jobs):
                try:
                    result = run_job_attempt(job)
                except Exception:  # noqa: BLE001 -- reported, and the grid goes on
                    failed(i, traceback.format_exc())
                else:
                    finished(i, result)
    finally:
        bar.close()
    done = [r for r in results if r is not None]
    return GridRun(results=done, failures=failures, ran=len(done))


def _run_processes(jobs, workers, finished, failed) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)))
    try:
        futures = {pool.submit(run_job_attempt, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 -- the child's traceback is chained as __cause__
                failed(futures[future], "".join(traceback.format_exception(exc)))
            else:
                finished(futures[future], result)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _run_ray(jobs, workers, address, max_retries, finished, failed) -> None:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 **({} if address else {"num_cpus": workers}))
    try:
        shipped = {}  # EnvDataKey -> ObjectRef: each data set crosses to the object store once
        refs = {}
        remote = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(run_job_attempt)
        for i, job in enumerate(jobs):
            try:
                data = job_env_data(job)
            except Exception:  # noqa: BLE001 -- this job cannot start; the others still run
                failed(i, traceback.format_exc())
                continue
            if data.key not in shipped:
                shipped[data.key] = ray.put(data)
            refs[remote.remote(job, shipped[data.key])] = i
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        failed(refs[ref], _ray_error_text(exc))
                    else:
                        finished(refs[ref], result)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started_here:
            ray.shutdown()


def _ray_error_text(exc) -> str:
    """The remote traceback of a job that raised (``RayTaskError``), without colour codes; else the error
    (e.g. a worker that died more often than the retries allow)."""
    import re

    import ray

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if isinstance(exc, ray.exceptions.RayTaskError):
        return f"Traceback (most recent call last), from the Ray worker {text}"
    return f"{type(exc).__name__}: {text}"


# ------------------------------------------------------------------ a grid with saved results
def _comparable(job: dict) -> dict:
    from fcpo.runs import jsonable

    return jsonable({k: v for k, v in job.items() if k != "run_dir"})


def run_grid(spec: GridSpec, out: str | Path | None = None, *, keep_runs: bool = True, force: bool = False,
             **dispatch_options) -> GridRun:
    """Every job of ``spec`` through :func:`dispatch`, resumable when ``out`` is given.

    A job whose result is in ``out/results/<job>.json`` is not run again (``force``: every job
    runs again); each job finishing now is saved there at once.  ``keep_runs``: trained jobs keep
    their run folders under ``out/jobs/`` (needs a disk the workers share with the driver).
    Refuses (``ValueError``) an ``out`` holding a result of a different grid.
    """
    jobs = spec.jobs()
    for job in jobs:
        if job.get("data_dir") is not None:  # one path on the driver and every worker, one memo key
            job["data_dir"] = str(Path(job["data_dir"]).expanduser().resolve())
    names = [job_name(j) for j in jobs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"grid: job names {dup} are not unique (job_name must tell every job apart)")
    if out is None:
        return dispatch(jobs, **dispatch_options)

    from fcpo.runs import write_json

    out = Path(out)
    results_dir = out / RESULTS_DIR
    saved: dict[int, dict] = {}
    for i, (job, name) in enumerate(zip(jobs, names)):
        path = results_dir / f"{name}.json"
        if keep_runs:
            job["run_dir"] = str((out / RUNS_DIR / name).resolve())
        if force:
            path.unlink(missing_ok=True)
            if keep_runs:
                shutil.rmtree(job["run_dir"], ignore_errors=True)
        elif path.is_file():
            try:
                result = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"{path}: unreadable saved result ({exc}); delete it or pass --force") from None
            theirs, ours = _comparable(result.get("job", {})), _comparable(job)
            if theirs != ours:
                diff = {k: (theirs.get(k), ours.get(k)) for k in sorted(set(theirs) | set(ours))
                        if theirs.get(k) != ours.get(k)}
                raise ValueError(f"--out {out}: {path} is a result of a different grid (saved vs now: {diff}); "
                                 "choose another --out, or pass --force to rerun every job")
            saved[i] = result
    pending = [i for i in range(len(jobs)) if i not in saved]
    if saved:
        print(f"grid: {len(saved)} of {len(jobs)} job(s) already done in {results_dir}; running "
              f"{len(pending)}", file=sys.stderr)

    fresh: dict[int, dict] = {}

    def save(k: int, result: dict) -> None:
        name = names[pending[k]]
        write_json(results_dir / f"{name}.json", result)
        (results_dir / f"{name}.error.txt").unlink(missing_ok=True)
        fresh[pending[k]] = result

    def save_failure(k: int, failure: JobFailure) -> None:
        from fcpo.runs import atomic_write

        atomic_write(results_dir / f"{failure.name}.error.txt", failure.traceback)

    run = dispatch([jobs[i] for i in pending], on_result=save, on_failure=save_failure, done_before=len(saved),
                   **dispatch_options) if pending else GridRun()
    by_index = {**saved, **fresh}
    return GridRun(results=[by_index[i] for i in sorted(by_index)], failures=run.failures, reused=len(saved),
                   ran=run.ran, out=out)
