"""One checkpoint mechanism for every agent: a class names what it saves, one mixin saves and restores it.

``_checkpointed`` lists entries ``"attr"`` or ``("key", "dotted.attr.path")`` (SB3's
``_get_torch_save_params`` idea).  Each value is handled by its type:

* objects with ``state_dict``/``load_state_dict`` (modules, optimisers, Lagrange multipliers, buffers);
* ``torch.Generator`` (``get_state``/``set_state``), ``numpy.random.Generator`` and lists of them (the
  PCG64 state as plain ints, so ``torch.load(weights_only=True)`` reads it);
* numpy arrays (saved as tensors, restored with their dtype), and plain ``int``/``float``/``str``/
  ``dict`` values.

``_before_load(state)`` / ``_after_load()`` hooks handle what depends on loaded values (rebuilding
optimisers, syncing a multiplier into a policy).
"""
from __future__ import annotations

import numpy as np
import torch


def numpy_rng_state(state: dict) -> dict:
    """A numpy ``PCG64`` bit-generator state (``rng.bit_generator.state``) as plain values."""
    return {"bit_generator": state["bit_generator"], "state": int(state["state"]["state"]),
            "inc": int(state["state"]["inc"]), "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


def restore_numpy_rng_state(d: dict) -> dict:
    """Inverse of :func:`numpy_rng_state`: assign the result to ``rng.bit_generator.state``."""
    return {"bit_generator": d["bit_generator"], "state": {"state": int(d["state"]), "inc": int(d["inc"])},
            "has_uint32": int(d["has_uint32"]), "uinteger": int(d["uinteger"])}


class NonFiniteState(ValueError):
    """A NaN or infinite value in state about to be saved or just loaded (a diverged agent)."""


def non_finite_entries(state, prefix: str = "") -> list[str]:
    """Dotted keys of the floating tensors/arrays/numbers in ``state`` (nested dicts/lists) holding NaN or inf."""
    bad: list[str] = []
    if isinstance(state, torch.Tensor):
        inexact = state.is_floating_point() or state.is_complex()
        if inexact and state.numel() and not bool(torch.isfinite(state).all()):
            bad.append(prefix or "<value>")
    elif isinstance(state, np.ndarray):
        if np.issubdtype(state.dtype, np.inexact) and state.size and not bool(np.isfinite(state).all()):
            bad.append(prefix or "<value>")
    elif isinstance(state, (float, np.floating)) and not isinstance(state, bool):
        if not np.isfinite(state):
            bad.append(prefix or "<value>")
    elif isinstance(state, dict):
        for key, value in state.items():
            bad.extend(non_finite_entries(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            bad.extend(non_finite_entries(value, f"{prefix}[{i}]"))
    return bad


def check_finite_state(state, where: str, hint: str = "") -> None:
    """Raise :class:`NonFiniteState` naming ``where`` and the first bad keys if ``state`` holds NaN/inf.

    Called before every checkpoint save (so a diverged critic never reaches disk) and after every load."""
    bad = non_finite_entries(state)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteState(f"{where}: non-finite values (NaN/inf) in {shown}: training diverged "
                             f"(lower a learning rate such as critic_lr){hint}")


def _entries(names) -> list[tuple[str, str]]:
    return [(n, n) if isinstance(n, str) else (str(n[0]), str(n[1])) for n in names]


def _resolve(obj, path: str):
    *parents, last = path.split(".")
    for part in parents:
        obj = getattr(obj, part)
    return obj, last


def save_value(value):
    """The checkpoint form of one attribute value (see the module docstring)."""
    if isinstance(value, torch.Generator):
        return value.get_state()
    if isinstance(value, np.random.Generator):
        return numpy_rng_state(value.bit_generator.state)
    if isinstance(value, list) and value and all(isinstance(v, np.random.Generator) for v in value):
        return [numpy_rng_state(v.bit_generator.state) for v in value]  # e.g. a vector env's per-sub-env generators
    if hasattr(value, "state_dict"):
        return value.state_dict()
    if isinstance(value, np.ndarray):
        return torch.as_tensor(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in value.items()}
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


class Checkpointed:
    """Mixin: ``state_dict``/``load_state_dict`` over the attributes named in ``_checkpointed``."""

    _checkpointed: tuple = ()

    def state_dict(self) -> dict:
        """Every ``_checkpointed`` value: tensors and plain values only (``torch.load(weights_only=True)``)."""
        out = {}
        for key, path in _entries(self._checkpointed):
            owner, attr = _resolve(self, path)
            out[key] = save_value(getattr(owner, attr))
        return out

    def _before_load(self, state: dict) -> None:
        """Hook: runs before the values are restored."""

    def _after_load(self) -> None:
        """Hook: runs after the values are restored."""

    def load_state_dict(self, state: dict) -> None:
        entries = _entries(self._checkpointed)
        missing = [key for key, _ in entries if key not in state]
        if missing:
            raise KeyError(f"{type(self).__name__} checkpoint lacks {missing} (has {sorted(state)})")
        self._before_load(state)
        for key, path in entries:
            owner, attr = _resolve(self, path)
            current, saved = getattr(owner, attr), state[key]
            if isinstance(current, torch.Generator):
                current.set_state(saved.cpu())
            elif isinstance(current, np.random.Generator):
                current.bit_generator.state = restore_numpy_rng_state(saved)
            elif isinstance(current, list) and current and all(isinstance(v, np.random.Generator) for v in current):
                saved = [saved] if isinstance(saved, dict) else list(saved)  # a single state: older checkpoints
                if len(saved) > len(current):
                    raise ValueError(f"{key!r}: checkpoint has {len(saved)} generators, this object {len(current)}")
                for gen, st in zip(current, saved):
                    gen.bit_generator.state = restore_numpy_rng_state(st)
            elif hasattr(current, "load_state_dict"):
                current.load_state_dict(saved)
            elif isinstance(current, np.ndarray):
                setattr(owner, attr, saved.cpu().numpy().astype(current.dtype))
            elif isinstance(current, dict):
                setattr(owner, attr, dict(saved))
            elif current is None or isinstance(current, (bool, int, float, str)):
                setattr(owner, attr, type(current)(saved) if current is not None and saved is not None else saved)
            else:
                raise TypeError(f"cannot restore {key!r} into a {type(current).__name__}")
        self._after_load()
