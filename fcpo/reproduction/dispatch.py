"""Running a grid: every job through Ray when it is installed (``ray.init()`` locally, or ``address=``
for an existing cluster), else one process per job."""
from __future__ import annotations

import importlib.util
from concurrent.futures import ProcessPoolExecutor

from fcpo.reproduction.grid import GridSpec, job_name, run_job

def dispatch(jobs: list[dict], workers: int = 2, address: str | None = None, use_ray: bool | None = None,
             progress: bool = True) -> list[dict]:
    """Run ``jobs`` through Ray when available (or asked for), else one process per job."""
    from tqdm import tqdm

    if use_ray is None:
        use_ray = importlib.util.find_spec("ray") is not None
    if use_ray:
        import ray

        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, ignore_reinit_error=True,
                     **({} if address else {"num_cpus": workers}))
        remote = ray.remote(num_cpus=1)(run_job)
        refs = [remote.remote(job) for job in jobs]
        pending = list(refs)
        with tqdm(total=len(refs), desc="grid (ray)", disable=not progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                bar.update(len(done))
        return ray.get(refs)
    if workers <= 1:
        return [run_job(j) for j in tqdm(jobs, desc="grid", disable=not progress)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_job, j) for j in jobs]
        out = []
        for f in tqdm(futures, desc="grid (processes)", disable=not progress):
            out.append(f.result())
        return out


def run_grid(spec: GridSpec, jobs_dir=None, **dispatch_options) -> list[dict]:
    """Every job of ``spec`` through :func:`dispatch`; trained jobs keep run folders under ``jobs_dir`` if given."""
    from pathlib import Path

    jobs = spec.jobs()
    if jobs_dir is not None:
        for job in jobs:
            job["run_dir"] = str((Path(jobs_dir) / job_name(job)).resolve())
    return dispatch(jobs, **dispatch_options)
