"""What every trainable agent offers, the agent registry, and the documented config fields.

Adding an agent: write a module ``fcpo/agents/<name>.py`` with a config dataclass whose fields
are declared by :func:`param` (one-line help each) and a factory decorated by
:func:`register_agent`::

    @register_agent("my-agent", MyConfig, description="...")
    def make_my_agent(config: MyConfig, env: EnvSpec, device, seed) -> Agent: ...

Nothing else: the registry imports every module of this package (``pkgutil``) the first
time :data:`AGENTS`, :func:`get_agent_spec` or :func:`make_agent` is used, so callers need no
import side effect; a module that fails to import fails loudly; a name registered twice raises.
The factory receives an :class:`fcpo.envs.EnvSpec` (which env, with which options) and builds
its envs with ``env.make_vector(..., mode="train")``.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import torch

from fcpo.policies.base import Policy, check_alpha_prime  # noqa: F401 (re-exported)

# ----------------------------------------------------------------------------------- config fields


def param(default=dataclasses.MISSING, help: str = "", *, default_factory=dataclasses.MISSING,
          low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False,
          **kwargs):
    """A dataclass field with a one-line ``help`` (read by :func:`config_fields` and ``fcpo-train --list-params``).

    ``low``/``high`` declare the allowed range of a number (``low_open``/``high_open``: excluded ends), e.g.
    ``param(3e-3, "Adam step size", low=0, low_open=True)`` for a positive value; :func:`build_config`
    (every run, flag and YAML value) enforces it with :func:`check_field_ranges`."""
    if not help:
        raise ValueError("every agent config field needs a one-line help text")
    metadata = {**kwargs.pop("metadata", {}), "help": help}
    if low is not None or high is not None:
        metadata["range"] = (low, high, bool(low_open), bool(high_open))
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata, **kwargs)


def range_text(low, high, low_open: bool, high_open: bool) -> str:
    """``(0, 1]``-style text of a declared range (``inf`` for a missing end)."""
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"


def check_field_ranges(config, where: str | None = None) -> None:
    """``ValueError`` naming the field if a number of ``config`` lies outside its declared :func:`param` range."""
    for f in dataclasses.fields(config):
        bounds = f.metadata.get("range")
        value = getattr(config, f.name)
        if bounds is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high, low_open, high_open = bounds
        ok = value == value  # NaN fails every range
        ok = ok and (low is None or (value > low if low_open else value >= low))
        ok = ok and (high is None or (value < high if high_open else value <= high))
        if not ok:
            prefix = f"{where}: " if where else ""
            raise ValueError(f"{prefix}{type(config).__name__}: {f.name} must lie in "
                             f"{range_text(low, high, low_open, high_open)}, got {value!r}")


def config_fields(cls) -> list[dict]:
    """The fields of an agent config dataclass: ``[{name, type, default, help}, ...]`` in declaration order.

    Raises ``TypeError`` for a non-dataclass and ``ValueError`` naming a field without help text."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        help_text = f.metadata.get("help")
        if not help_text:
            raise ValueError(f"{cls.__qualname__}.{f.name} has no help text (declare it with fcpo.agents.base.param)")
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append({"name": f.name, "type": type_name, "default": default, "help": help_text})
    return out


# ----------------------------------------------------------------------------------- the protocol


@runtime_checkable
class AgentConfig(Protocol):
    """Every agent config has ``alpha_prime`` (α'): at most α'·K G0 items per slate, i.e. the per-step
    cost limit ``cost_limit_per_step = alpha_prime * slate_size`` (1.0 = unconstrained; agents that
    ignore the constraint, TRPO and iALP, only report against it)."""

    alpha_prime: float


@runtime_checkable
class Agent(Protocol):
    """A trainable recommender.

    ``train_iteration(iteration)`` runs one iteration (rollouts + update) and
    returns scalar metrics for logging (e.g. ``reward``, ``cost``, ``cost_limit``,
    ``kl``); ``policy`` is the :class:`Policy` the evaluator uses;
    ``state_dict``/``load_state_dict`` hold everything needed to resume
    (networks, optimisers, RNG states, Lagrange multipliers; see
    :class:`fcpo.agents.checkpoint.Checkpointed`).  ``config.alpha_prime`` is α'
    (:class:`AgentConfig`).
    """

    config: AgentConfig
    policy: Policy

    def train_iteration(self, iteration: int) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


# ----------------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class AgentSpec:
    name: str
    config_cls: type
    factory: Callable[..., Agent]
    description: str = ""


class _Registry(Mapping):
    """name -> :class:`AgentSpec`; reading it imports every agent module of the package once."""

    def __init__(self):
        self._specs: dict[str, AgentSpec] = {}
        self._loaded = False
        self._lock = threading.RLock()

    def add(self, spec: AgentSpec) -> None:
        with self._lock:
            old = self._specs.get(spec.name)
            if old is not None:
                raise ValueError(f"agent {spec.name!r} is already registered (by {old.factory.__module__}."
                                 f"{old.factory.__qualname__}); pick another name")
            self._specs[spec.name] = spec

    def load(self) -> None:
        """Import every module of :mod:`fcpo.agents` so each registers its agents (errors propagate)."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True  # set first: modules importing this one during the scan must not recurse
            import fcpo.agents as package

            try:
                for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
                    if not info.name.startswith("_"):
                        importlib.import_module(f"{package.__name__}.{info.name}")
            except BaseException:
                self._loaded = False
                raise

    def __getitem__(self, name: str) -> AgentSpec:
        self.load()
        return self._specs[name]

    def __iter__(self):
        self.load()
        return iter(dict(self._specs))

    def __len__(self) -> int:
        self.load()
        return len(self._specs)

    def __contains__(self, name) -> bool:
        self.load()
        return name in self._specs


#: every registered agent (loads the registry on first access)
AGENTS = _Registry()


def register_agent(name: str, config_cls: type, factory: Callable[..., Agent] | None = None, description: str = ""):
    """Register ``factory(config, env: EnvSpec, device, seed) -> Agent`` under ``name``.

    Used as a decorator (``@register_agent("fcpo", FCPOConfig, description=...)``) or called with the
    factory.  Raises ``ValueError`` if ``name`` is taken or ``config_cls`` is not a documented dataclass
    with ``alpha_prime``."""
    config_fields(config_cls)  # every field documented
    if "alpha_prime" not in {f.name for f in dataclasses.fields(config_cls)}:
        raise ValueError(f"agent {name!r}: {config_cls.__qualname__} needs an alpha_prime field (AgentConfig)")

    def decorate(fn):
        AGENTS.add(AgentSpec(name, config_cls, fn, description))
        return fn

    return decorate if factory is None else decorate(factory)


def load_agent_modules() -> None:
    """Import every agent module (kept for callers of the old API; :data:`AGENTS` does it by itself)."""
    AGENTS.load()


def get_agent_spec(name: str) -> AgentSpec:
    """The :class:`AgentSpec` of ``name``, or ``ValueError`` listing the registered names."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose one of {', '.join(sorted(AGENTS))}")
    return AGENTS[name]


def as_env_spec(env):
    """An :class:`fcpo.envs.EnvSpec` from an EnvSpec, a ``{"id": ..., **options}`` dict, or (deprecated)
    a dataclass of ``fcpo/MovieLensFair-v0`` options (the pre-EnvSpec agent API)."""
    from fcpo.envs.contract import DEFAULT_ENV_ID, EnvSpec

    if isinstance(env, EnvSpec):
        return env
    if isinstance(env, Mapping):
        return EnvSpec.from_dict(dict(env))
    if dataclasses.is_dataclass(env) and not isinstance(env, type):
        warnings.warn("passing an env options dataclass to an agent is deprecated; pass "
                      "fcpo.envs.EnvSpec(id, options)", DeprecationWarning, stacklevel=3)
        return EnvSpec(DEFAULT_ENV_ID, dataclasses.asdict(env))
    raise TypeError(f"env must be an fcpo.envs.EnvSpec (or a dict with 'id'), got {type(env).__name__}")


def make_agent(name: str, config, env, device: torch.device | str = "cpu", seed: int = 0) -> Agent:
    """Build the registered agent ``name`` with ``config`` (its config dataclass) on ``env`` (an EnvSpec)."""
    spec = get_agent_spec(name)
    if not isinstance(config, spec.config_cls):
        raise TypeError(f"agent {name!r} needs a {spec.config_cls.__qualname__}, got {type(config).__qualname__}")
    return spec.factory(config, as_env_spec(env), torch.device(device), int(seed))


# ----------------------------------------------------------------------------------- typed config values

_TRUE, _FALSE = ("true",), ("false",)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce_value(value, tp, key: str, where: str):
    """``value`` as the annotated type ``tp`` of config key ``key``, or ``ValueError`` naming ``where`` and ``key``.

    One rule set for flags, ``--set``, YAML files and resumed configs: ``bool`` takes ``true``/``false``
    only (not ``yes``, ``1`` or ``flase``); ``int`` takes integers (``"3"``, not ``2.5`` or ``true``);
    ``float`` takes finite numbers, also written as text (``"1e-4"``, which YAML 1.1 reads as a string);
    ``X | None`` takes ``null``/``none`` too; ``tuple[int, ...]`` takes a list of such values.
    """
    import math
    import types
    import typing

    def bad(expected: str):
        raise ValueError(f"{where}: key {key!r}: expected {expected}, got {value!r}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~", "")):
            return None
        if len(inner) == 1:
            return coerce_value(value, inner[0], key, where)
        return value
    if origin is tuple:
        if isinstance(value, str):
            import yaml

            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                bad(f"a list of {', '.join(_type_name(a) for a in args if a is not Ellipsis)}")
        if not isinstance(value, (list, tuple)):
            value = [value] if not isinstance(value, (dict, set)) else bad("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce_value(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value))
        if args and len(args) != len(value):
            bad(f"a list of {len(args)} values")
        return tuple(coerce_value(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args))) \
            if args else tuple(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        bad("true or false")
    if tp is int:
        if isinstance(value, bool):
            bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                bad("an integer")
        bad("an integer")
    if tp is float:
        if isinstance(value, bool):
            bad("a number")
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                bad("a number")
        else:
            bad("a number")
        if not math.isfinite(out):
            bad("a finite number")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
            bad("a string")
        return str(value)
    return value


def typed_config_values(cls, values: Mapping, where: str, what: str = "key") -> dict:
    """``values`` checked against the fields of dataclass ``cls``: unknown keys refused, each value
    coerced by :func:`coerce_value` to its field's annotated type (errors name ``where`` and the key)."""
    import typing

    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(map(str, values)) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown {what}(s) {unknown} for {cls.__name__}; valid: {sorted(names)}")
    return {k: coerce_value(v, hints[k], k, where) for k, v in values.items()}


def build_config(cls, values: Mapping, where: str, what: str = "key"):
    """``cls(**typed_config_values(cls, values, where))``; the class's own range checks (``__post_init__``)
    become ``ValueError``s naming ``where``."""
    typed = typed_config_values(cls, values, where, what)
    try:
        config = cls(**typed)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    check_field_ranges(config, where)
    return config
