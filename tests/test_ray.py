"""Running the grid for real: through Ray (a local instance, a cluster started here and reached by
``fcpo-bench --address`` as a user reaches a remote one, a worker killed mid-job) with the same numbers
as the process pool, and resumable grids (saved results, only missing jobs re-run, ``--force``).

The Ray tests skip with a reason when Ray is absent; the resumability tests need no Ray.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from fcpo import reproduction as rp
from fcpo.cli import bench
from fcpo.reproduction.dispatch import HOLD_ENV, JobFailure, default_out, dispatch, grid_digest, run_grid

dispatch_module = importlib.import_module("fcpo.reproduction.dispatch")  # the package exports a function `dispatch`
REPO = Path(__file__).resolve().parents[1]
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed (pip install 'fcpo[dist]'): "
                                                    "the Ray dispatch path is not tested")
# two jobs, one trained (3 CPO iterations) and one ranker: the quick grid, cut down
QUICK = ["--dataset", "synthetic", "--quick", "--methods", "fcpo", "popularity", "--alphas", "0.4", "--no-long-term"]
FCPO_JOB = "fcpo-a0.4-s0"


def quick_spec() -> rp.GridSpec:
    return bench.spec_from_args(bench.build_parser().parse_args(QUICK))


def numbers(result: dict) -> dict:
    """Every number of a result except wall times (and the run folder's path), after a JSON round trip."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("seconds", "train_seconds", "run_dir")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(json.loads(json.dumps(result, default=float)))


def by_job(results: list[dict]) -> dict:
    return {rp.job_name(r["job"]): numbers(r) for r in results}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference():
    """The quick grid through the process pool (2 processes): the numbers every other path must give."""
    run = run_grid(quick_spec(), None, workers=2, use_ray=False, progress=False)
    assert run.ok and len(run.results) == 2
    return by_job(run.results)


# ------------------------------------------------------------------ a real cluster, through the CLI
# Ray token authentication, as a secured cluster runs: the head and the driver share this token
RAY_TOKEN = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
# on a heavily loaded machine a worker may take over Ray's default 60 s to start; killing and restarting
# it then never ends (seen at load average 20 on 2 cores): give workers 5 minutes
SLOW_START = {"RAY_worker_register_timeout_seconds": "300"}


def _quiet_env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "RAY_USAGE_STATS_ENABLED": "0", **RAY_TOKEN, **SLOW_START}
    env.pop(HOLD_ENV, None)
    return {**env, **extra}


def _bench(*args, env, cwd, timeout=300):
    code = "import sys; sys.argv[0] = 'fcpo-bench'; from fcpo.cli.bench import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def ray_cluster(tmp_path):
    """``ray start --head`` on 127.0.0.1 (2 CPUs) in its own session; stopped by PID/process group at the end,
    also when the test fails.  Its workers get an empty cache folder and no data folder."""
    temp_dir = tempfile.mkdtemp(prefix="fcr", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    worker_cache = tmp_path / "worker-cache"
    worker_cache.mkdir()
    env = _quiet_env(FCPO_CACHE_DIR=str(worker_cache))
    env.pop("FCPO_DATA_DIR", None)
    port = free_port()
    log = open(tmp_path / "ray-head.log", "w")
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                             "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
                             "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp_dir,
                             "--dashboard-agent-listen-port", str(free_port()),
                             "--metrics-export-port", str(free_port())],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (tmp_path / "ray-head.log").read_text():
            assert head.poll() is None, f"ray start exited: {(tmp_path / 'ray-head.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "ray start did not come up in 120 s"
            time.sleep(0.5)
        yield {"address": f"127.0.0.1:{port}", "worker_cache": worker_cache}
    finally:
        head.send_signal(signal.SIGTERM)  # --block: the head stops its raylet, GCS and workers
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # whatever of its session is left
        except ProcessLookupError:
            pass
        head.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@needs_ray
@pytest.mark.slow
def test_fcpo_bench_on_a_ray_cluster_matches_the_process_pool_and_resumes(ray_cluster, reference, tmp_path):
    out = tmp_path / "out"
    env = _quiet_env()
    args = [*QUICK, "--ray", "yes", "--address", ray_cluster["address"], "--out", str(out), "--no-progress"]
    proc = _bench(*args, env=env, cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr[-4000:]  # 1: a check of the tiny table failed, not a job
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    payload = json.loads((out / "synthetic.json").read_text())
    assert by_job(payload["results"]) == reference
    assert sorted(p.name for p in (out / "results").iterdir()) == [f"{FCPO_JOB}.json", "popularity-a1-s0.json"]
    # the workers built no data: it came from the driver through the object store
    assert not any(ray_cluster["worker_cache"].iterdir())
    # a lost job (its result gone): the same command runs only that one
    (out / "results" / f"{FCPO_JOB}.json").unlink()
    again = _bench(*args, env=env, cwd=tmp_path)
    assert again.returncode == proc.returncode, again.stderr[-4000:]
    assert "1 of 2 job(s) already done" in again.stderr and "running 1" in again.stderr
    assert by_job(json.loads((out / "synthetic.json").read_text())["results"]) == reference


# ------------------------------------------------------------------ a local Ray instance
@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """``ray.init(num_cpus=2)`` for this module's tests (workers see the test hook's folder); shut down after."""
    import ray

    hold_dir = tmp_path_factory.mktemp("hold")
    temp_dir = tempfile.mkdtemp(prefix="frl", dir="/tmp")
    mp = pytest.MonkeyPatch()
    mp.setenv(HOLD_ENV, str(hold_dir))  # before ray.init: the workers inherit it
    mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
    for key, value in SLOW_START.items():
        mp.setenv(key, value)
    mp.setenv("RAY_AUTH_TOKEN", RAY_TOKEN["RAY_AUTH_TOKEN"])  # the token lives in the env, not in ~/.ray
    mode = os.environ.pop("RAY_AUTH_MODE", None)  # unset: ray.init turns token mode on, in os.environ too
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    try:
        yield hold_dir
    finally:
        ray.shutdown()
        mp.undo()
        os.environ.pop("RAY_AUTH_MODE", None)
        if mode is not None:
            os.environ["RAY_AUTH_MODE"] = mode
        shutil.rmtree(temp_dir, ignore_errors=True)


@needs_ray
def test_local_ray_matches_the_process_pool_and_saves_each_job(local_ray, reference, tmp_path):
    run = run_grid(quick_spec(), tmp_path, use_ray=True, progress=False)
    assert run.ok and run.ran == 2 and run.reused == 0
    assert by_job(run.results) == reference
    saved = [json.loads((tmp_path / "results" / f"{name}.json").read_text()) for name in reference]
    assert by_job(saved) == reference
    assert (tmp_path / "jobs" / FCPO_JOB / "checkpoint.pt").is_file()  # run folders: the workers share this disk
    rerun = run_grid(quick_spec(), tmp_path, use_ray=True, progress=False)
    assert rerun.ran == 0 and rerun.reused == 2 and by_job(rerun.results) == reference


@needs_ray
def test_a_worker_killed_mid_job_is_retried_and_the_grid_completes(local_ray, reference, tmp_path):
    for stale in local_ray.iterdir():
        stale.unlink()
    hold = local_ray / f"{FCPO_JOB}.hold"
    hold.touch()
    outcome = {}
    grid = threading.Thread(target=lambda: outcome.update(run=run_grid(quick_spec(), tmp_path, use_ray=True,
                                                                           progress=False)))
    grid.start()
    try:
        deadline = time.monotonic() + 120
        while not list(local_ray.glob(f"{FCPO_JOB}.*.pid")):
            assert time.monotonic() < deadline and grid.is_alive(), "the held job never started"
            time.sleep(0.1)
        (first,) = local_ray.glob(f"{FCPO_JOB}.*.pid")
        victim = int(first.read_text())
        os.kill(victim, signal.SIGKILL)  # the worker process running the job, mid-job
    finally:
        hold.unlink()
        grid.join(timeout=240)
    assert not grid.is_alive(), "the grid did not finish after the retry"
    run = outcome["run"]
    assert run.ok, [f.traceback for f in run.failures]
    attempts = {int(p.read_text()) for p in local_ray.glob(f"{FCPO_JOB}.*.pid")}
    assert victim in attempts and len(attempts) == 2  # a second attempt, in another worker process
    assert by_job(run.results) == reference


@pytest.mark.parametrize("how", [pytest.param("ray", marks=needs_ray), "processes"])
def test_a_failing_job_is_reported_with_its_traceback_and_the_others_finish(how, request):
    if how == "ray":
        request.getfixturevalue("local_ray")
    good = rp.GridSpec(dataset="synthetic", seeds=(0,), methods=("popularity",), long_term_alpha=None,
                       horizon=4, eval_steps=4).jobs()[0]
    bad = dict(good, method="nope")
    seen = []
    run = dispatch([bad, good], workers=2, use_ray=how == "ray", progress=False,
                   on_failure=lambda i, f: seen.append((i, f.name)))
    assert [rp.job_name(r["job"]) for r in run.results] == ["popularity-a1-s0"]
    (failure,) = run.failures
    assert isinstance(failure, JobFailure) and failure.name == "nope-a1-s0" and seen == [(0, "nope-a1-s0")]
    assert "Traceback" in failure.traceback and "unknown ranker 'nope'" in failure.traceback
    assert "make_ranker" in failure.traceback  # the worker's frames, not just the message


# ------------------------------------------------------------------ resumable grids (no Ray needed)
def ranker_spec(**changes) -> rp.GridSpec:
    """Three fast jobs: popularity s0, random s0, random s1."""
    return rp.GridSpec(**{"dataset": "synthetic", "seeds": (0, 1), "methods": ("popularity", "random"),
                          "long_term_alpha": None, "horizon": 4, "eval_steps": 4, **changes})


@pytest.fixture
def job_calls(monkeypatch):
    """Names of the jobs actually run (in this process)."""
    calls = []
    real = dispatch_module.run_job

    def counting(job):
        calls.append(rp.job_name(job))
        return real(job)
    monkeypatch.setattr(dispatch_module, "run_job", counting)
    return calls


def test_a_rerun_runs_only_the_jobs_without_a_saved_result_and_force_reruns_all(tmp_path, job_calls):
    spec = ranker_spec()
    first = run_grid(spec, tmp_path, use_ray=False, workers=1, progress=False)
    names = ["popularity-a1-s0", "random-a1-s0", "random-a1-s1"]
    assert job_calls == names and first.ran == 3
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [f"{n}.json" for n in names]
    assert not list((tmp_path / "results").glob(".*"))  # atomic writes leave no temporary files
    job_calls.clear()
    (tmp_path / "results" / "random-a1-s0.json").unlink()
    second = run_grid(spec, tmp_path, use_ray=False, workers=1, progress=False)
    assert job_calls == ["random-a1-s0"] and second.ran == 1 and second.reused == 2
    assert [rp.job_name(r["job"]) for r in second.results] == names  # grid order, saved and new merged
    assert by_job(second.results) == by_job(first.results)
    job_calls.clear()
    run_grid(spec, tmp_path, use_ray=False, workers=1, progress=False, force=True)
    assert job_calls == names


def test_an_out_folder_of_a_different_grid_is_refused(tmp_path, job_calls):
    run_grid(ranker_spec(seeds=(0,)), tmp_path, use_ray=False, workers=1, progress=False)
    with pytest.raises(ValueError, match=r"different grid.*eval_steps.*--force"):
        run_grid(ranker_spec(seeds=(0,), eval_steps=5), tmp_path, use_ray=False, workers=1, progress=False)
    job_calls.clear()
    run = run_grid(ranker_spec(seeds=(0,), eval_steps=5), tmp_path, use_ray=False, workers=1, progress=False,
                   force=True)
    assert len(job_calls) == 2 and all(r["job"]["eval_steps"] == 5 for r in run.results)


def test_an_interrupted_attempt_s_run_folder_is_replaced(tmp_path, monkeypatch):
    stale = tmp_path / "jobs" / FCPO_JOB
    stale.mkdir(parents=True)
    (stale / "log.jsonl").write_text('{"iteration": 0}\n')
    monkeypatch.setattr(dispatch_module, "run_job", lambda job: {"job": job, "existed": Path(job["run_dir"]).exists()})
    assert dispatch_module.run_job_attempt({**quick_spec().jobs()[0], "run_dir": str(stale)})["existed"] is False


def test_the_default_out_folder_is_a_digest_of_the_grid():
    spec = quick_spec()
    assert grid_digest(spec) == grid_digest(quick_spec()) and len(grid_digest(spec)) == 8
    assert grid_digest(spec) != grid_digest(ranker_spec())
    other = quick_spec()
    other.iterations += 1
    assert grid_digest(other) != grid_digest(spec)
    assert default_out(spec) == Path("runs") / f"bench-synthetic-{grid_digest(spec)}"


def test_fcpo_bench_exits_3_on_a_failed_job_and_the_same_command_retries_only_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real = dispatch_module.run_job

    def random_fails(job):
        if job["method"] == "random":
            raise RuntimeError("injected failure")
        return real(job)
    monkeypatch.setattr(dispatch_module, "run_job", random_fails)
    args = ["--dataset", "synthetic", "--quick", "--methods", "popularity", "random", "--no-long-term",
            "--ray", "no", "--workers", "1", "--no-progress"]
    assert bench.main(args) == 3
    err = capsys.readouterr().err
    out = tmp_path / default_out(bench.spec_from_args(bench.build_parser().parse_args(args)))
    assert f"output folder {default_out(bench.spec_from_args(bench.build_parser().parse_args(args)))}" in err
    assert "job random-a1-s0 failed" in err and "RuntimeError: injected failure" in err
    assert "1 job(s) failed: random-a1-s0" in err
    assert "injected failure" in (out / "results" / "random-a1-s0.error.txt").read_text()
    assert (out / "results" / "popularity-a1-s0.json").is_file() and (out / "synthetic.json").is_file()
    monkeypatch.setattr(dispatch_module, "run_job", real)
    assert bench.main(args) in (0, 1)  # 1: a check failed on the tiny table; no job failed
    err = capsys.readouterr().err
    assert "1 of 2 job(s) already done" in err and "running 1" in err
    assert not (out / "results" / "random-a1-s0.error.txt").exists()
    methods = {r["method"] for r in json.loads((out / "synthetic.json").read_text())["rows"]}
    assert methods == {"popularity", "random"}


def test_an_address_without_ray_is_refused_not_run_locally():
    with pytest.raises(ValueError, match="--address 127.0.0.1:1.*--ray no"):
        dispatch(ranker_spec().jobs(), address="127.0.0.1:1", use_ray=False, progress=False)
