"""The settings of one training stage (SFT, DPO or S-DPO); no torch import, so CLIs can show defaults fast."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TrainConfig:
    """One training stage.  ``normalize`` (None = the policy's ``default_normalize``) chooses whether
    log-probabilities of samples with candidate lists are normalised over the list; DPO and S-DPO
    are invariant to that normaliser, SFT is not."""

    epochs: float = 1.0
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    beta: float = 1.0
    grad_clip: float | None = 1.0
    max_steps: int | None = None
    normalize: bool | None = None
    eval_batch_size: int = 1024
    seed: int = 0

    def __post_init__(self):
        if self.epochs <= 0 or self.batch_size < 1 or self.lr <= 0 or self.beta <= 0:
            raise ValueError(f"TrainConfig needs epochs > 0, batch_size >= 1, lr > 0 and beta > 0; got {self}")

    def to_dict(self) -> dict:
        return asdict(self)
