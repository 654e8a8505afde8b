"""Standardisation fitted on training rows only and stored in the checkpoint."""

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Scaler:
    """Per-column mean and standard deviation (float32)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, rows: np.ndarray) -> "Scaler":
        """Fit on (rows, columns), ignoring non-finite values; constant columns get std 1 (centred only)."""
        rows = np.where(np.isfinite(rows), rows, np.nan)
        mean = np.nanmean(rows, axis=0)
        std = np.nanstd(rows, axis=0)
        std = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0)
        return cls(np.nan_to_num(mean).astype(np.float32), std.astype(np.float32))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) / self.std).astype(np.float32)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return (values * self.std + self.mean).astype(np.float32)

    def to_state(self) -> dict[str, torch.Tensor]:
        return {"mean": torch.from_numpy(self.mean.copy()), "std": torch.from_numpy(self.std.copy())}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "Scaler":
        return cls(state["mean"].numpy().astype(np.float32), state["std"].numpy().astype(np.float32))
