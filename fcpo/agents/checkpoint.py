"""RNG states as plain Python ints, so agent checkpoints load with ``torch.load(weights_only=True)``."""
from __future__ import annotations


def numpy_rng_state(state: dict) -> dict:
    """A numpy ``PCG64`` bit-generator state (``rng.bit_generator.state``) as plain values."""
    return {"bit_generator": state["bit_generator"], "state": int(state["state"]["state"]),
            "inc": int(state["state"]["inc"]), "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}


def restore_numpy_rng_state(d: dict) -> dict:
    """Inverse of :func:`numpy_rng_state`: assign the result to ``rng.bit_generator.state``."""
    return {"bit_generator": d["bit_generator"], "state": {"state": int(d["state"]), "inc": int(d["inc"])},
            "has_uint32": int(d["has_uint32"]), "uinteger": int(d["uinteger"])}
