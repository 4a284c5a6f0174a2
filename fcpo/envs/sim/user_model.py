"""The simulator's user model: behaviour knobs, the three presets, and the calibrated rating model.

Built once per data key and shared by every env copy (:func:`get_sim_data` memoises).  See
:mod:`fcpo.envs.simulator` for the design (our own, "iALP-style"; not the iALP paper's simulators).
Completed ratings: PMF (Mnih & Salakhutdinov 2007) fitted on the training period, recalibrated by a
least-squares line ``a + b * pred`` fitted on half of the held-out ratings and checked on the other half.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, fields

import numpy as np

from fcpo.envs.env_data import EnvData, EnvDataKey, get_env_data

__all__ = ["SimParams", "SIM_PRESETS", "PARAM_NAMES", "calibrate_line", "SimData", "build_sim_data", "get_sim_data"]


@dataclass(frozen=True)
class SimParams:
    """User-behaviour knobs of the simulator (our design; see the module docstring)."""

    click_temperature: float = 0.5  # rating units per logit: larger = noisier clicks
    rating_center: float = 3.75  # completed rating with a 50 % click chance (popularity term aside)
    popularity_sensitivity: float = 0.0  # logit added per standard deviation of log popularity
    patience: int = 8  # consecutive unclicked items before the user leaves (0 = never leaves)
    drift_rate: float = 0.05  # step towards the clicked items, relative to the user-vector scale
    drift_noise: float = 0.02  # random-walk noise, relative to the user-vector scale

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
        if not self.click_temperature > 0:
            raise ValueError(f"click_temperature must be > 0, got {self.click_temperature!r}")
        if not isinstance(self.patience, (int, np.integer)) or self.patience < 0:
            raise ValueError(f"patience must be an integer >= 0 (0 = users never leave), got {self.patience!r}")
        for name in ("drift_rate", "drift_noise"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")


#: The three named simulator configurations (stand-ins for the paper's three simulated environments).
SIM_PRESETS: dict[str, SimParams] = {
    "noisy": SimParams(click_temperature=0.6, rating_center=4.25, popularity_sensitivity=0.0, patience=15,
                       drift_rate=0.05, drift_noise=0.02),
    "impatient": SimParams(click_temperature=0.3, rating_center=4.25, popularity_sensitivity=0.0, patience=5,
                           drift_rate=0.05, drift_noise=0.02),
    "popular": SimParams(click_temperature=0.4, rating_center=4.5, popularity_sensitivity=0.75, patience=10,
                         drift_rate=0.15, drift_noise=0.05),
}

PARAM_NAMES = tuple(f.name for f in fields(SimParams))


def calibrate_line(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least-squares ``target ~ a + b * pred``; returns (a, b)."""
    x = np.stack([np.ones_like(pred, dtype=np.float64), pred.astype(np.float64)], axis=1)
    (a, b), *_ = np.linalg.lstsq(x, target.astype(np.float64), rcond=None)
    return float(a), float(b)


@dataclass(frozen=True)
class SimData:
    """The env data plus the simulator's user model (built once per data key, shared by every copy)."""

    env: EnvData
    user_factors: np.ndarray  # float32 [n_users, sim_dim] PMF user vectors
    item_factors: np.ndarray  # float32 [n_items, sim_dim] PMF item vectors
    global_mean: float
    calib_a: float
    calib_b: float
    observed: object  # scipy csr [n_users, n_items]: every observed rating (train + test period)
    popularity_z: np.ndarray  # float64 [n_items] standardised log(1 + training count)
    calibration: dict  # held-out RMSEs (raw PMF, calibrated, constant) and sizes

    def completed_ratings(self, users: np.ndarray) -> np.ndarray:
        """[len(users), n_items] float32: observed ratings where present, else the calibrated PMF prediction."""
        users = np.asarray(users, dtype=np.int64)
        pred = self.global_mean + self.user_factors[users] @ self.item_factors.T
        out = np.clip(self.calib_a + self.calib_b * pred, 1.0, 5.0).astype(np.float32)
        obs = self.observed[users].tocoo()
        out[obs.row, obs.col] = obs.data
        return out


_SIM_CACHE: dict[tuple, SimData] = {}
_SIM_LOCK = threading.Lock()


def build_sim_data(key: EnvDataKey, sim_dim: int = 16, sim_seed: int = 0) -> SimData:
    from fcpo.data.embeddings import MFConfig, load_embeddings

    env = get_env_data(key)
    split = env.split
    pmf = load_embeddings(env.data, split, MFConfig(method="pmf", dim=int(sim_dim), seed=int(sim_seed)),
                          progress=False)
    mu = float(pmf.stats.get("global_mean", split.train_ratings.data.mean()))
    test = split.test_ratings.tocoo()
    if test.nnz < 4:
        raise ValueError(f"{key.dataset}: too few held-out ratings ({test.nnz}) to calibrate the simulator")
    pred = mu + np.einsum("nd,nd->n", pmf.user[test.row], pmf.item[test.col])
    order = np.lexsort((test.col, test.row))  # canonical order, then alternate halves: fit / check
    fit, check = order[0::2], order[1::2]
    a, b = calibrate_line(pred[fit], test.data[fit])
    calibrated = np.clip(a + b * pred[check], 1.0, 5.0)
    target = test.data[check].astype(np.float64)
    rmse = lambda p: float(np.sqrt(np.mean((p - target) ** 2)))  # noqa: E731
    calibration = {"n_fit": int(len(fit)), "n_check": int(len(check)), "a": a, "b": b,
                   "rmse_pmf_raw": rmse(np.clip(pred[check], 1.0, 5.0)), "rmse_calibrated": rmse(calibrated),
                   "rmse_constant": rmse(np.full_like(target, test.data[fit].mean()))}
    observed = (split.train_ratings + split.test_ratings).tocsr()
    logc = np.log1p(env.train_counts.astype(np.float64))
    pop_z = (logc - logc.mean()) / (logc.std() + 1e-12)
    return SimData(env=env, user_factors=np.ascontiguousarray(pmf.user, np.float32),
                   item_factors=np.ascontiguousarray(pmf.item, np.float32), global_mean=mu, calib_a=a, calib_b=b,
                   observed=observed, popularity_z=pop_z, calibration=calibration)


def get_sim_data(key: EnvDataKey, sim_dim: int = 16, sim_seed: int = 0) -> SimData:
    """Memoised :func:`build_sim_data` (thread-safe)."""
    cache_key = (key, int(sim_dim), int(sim_seed))
    with _SIM_LOCK:
        if cache_key not in _SIM_CACHE:
            _SIM_CACHE[cache_key] = build_sim_data(key, sim_dim, sim_seed)
        return _SIM_CACHE[cache_key]
