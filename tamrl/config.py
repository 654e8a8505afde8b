"""The typed, closed run configuration: one object per training run, written into its checkpoint.

Unknown keys are errors, so a typo in a config file never silently falls back to a default.
"""

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tamrl.errors import ConfigError
from tamrl.features import FEATURE_SETS

ModelName = Literal["tamrl", "tamlstm", "ctlstm", "xgboost"]


class TrainConfig(BaseModel):
    """Everything that defines a training run. Defaults follow the paper and the CarbonBench code."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelName = "tamrl"
    feature_set: str = "modis_met"
    seeds: int = Field(10, ge=1, description="ensemble members, one per seed")
    hidden: int = Field(128, ge=4)
    embedding: int = Field(32, ge=2)
    dropout: float = Field(0.2, ge=0, lt=1)
    lr: float = Field(1e-3, gt=0)
    lr_stage2: float = Field(5e-4, gt=0, description="learning rate of TAM-RL's joint stage")
    weight_decay: float = Field(1e-4, ge=0)
    lr_halve_every: int = Field(10, ge=1, description="epochs between learning-rate halvings")
    epochs: int = Field(40, ge=1, description="most epochs of stage 1 (the only stage of the baselines)")
    epochs_stage2: int = Field(40, ge=0, description="most epochs of TAM-RL's joint stage")
    patience: int = Field(5, ge=1, description="epochs without validation improvement before stopping")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap on batches per epoch (tests, quick runs)")
    sites_per_batch: int = Field(16, ge=1)
    queries_per_site: int = Field(16, ge=1, description="query windows per site and batch")
    support_windows: int = Field(8, ge=1, description="K: support windows per site in training")
    inference_support_windows: int = Field(24, ge=1, description="support windows per location at inference")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of training sites held for early stopping")
    split_seed: int = 56
    flux_weight: float = Field(0.1, ge=0, description="weight of the NEE = RECO - GPP penalty")
    class_weight_cap: float = Field(5.0, ge=1, description="cap on the inverse-frequency IGBP/Koppen weights")
    xgb_rounds: int = Field(1000, ge=1)
    xgb_early_stopping: int = Field(50, ge=1, description="rounds without validation gain before XGBoost stops")
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def model_post_init(self, context: Any) -> None:
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(f"feature_set must be one of {', '.join(FEATURE_SETS)}")


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Read a TOML run config (optional) and apply command-line overrides (None values are ignored)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid run config: {problems}") from exc
