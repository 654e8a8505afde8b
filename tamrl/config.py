"""The typed, closed run configuration: one object per training run, written into its checkpoint.

Unknown keys are errors, so a typo in a config file never silently falls back to a default.
"""

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tamrl.errors import ConfigError, validation_message
from tamrl.features import FEATURE_SETS

ModelName = Literal["tamrl", "tamlstm", "ctlstm", "xgboost"]


class TrainConfig(BaseModel):
    """Everything that defines a training run. Defaults: the recipe chosen by cross-validation (docs/VALIDATION.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelName = "tamrl"
    feature_set: str = "modis_met_context"
    seeds: int = Field(10, ge=1, description="ensemble members, one per seed")
    hidden: int = Field(128, ge=4)
    embedding: int = Field(8, ge=2, description="size of the task embedding z (small: it must not memorise sites)")
    dropout: float = Field(0.2, ge=0, lt=1)
    lr: float = Field(1e-3, gt=0, description="peak learning rate of stage 1, decayed by a cosine to 5% of it")
    lr_stage2: float = Field(5e-4, gt=0, description="peak learning rate of TAM-RL's joint stage")
    decoder_lr_factor: float = Field(0.1, ge=0, description="joint stage: the decoder's lr as a share of lr_stage2")
    weight_decay: float = Field(1e-4, ge=0)
    ema_decay: float = Field(0.995, ge=0, lt=1, description="per-step decay of the weight average that is kept")
    epochs: int = Field(15, ge=1, description="epochs of stage 1 (the only stage of the baselines), a fixed budget")
    epochs_stage2: int = Field(8, ge=0, description="epochs of TAM-RL's joint stage, a fixed budget (0: none)")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap on batches per epoch (tests, quick runs)")
    sites_per_batch: int = Field(32, ge=1)
    queries_per_site: int = Field(16, ge=1, description="query windows per site and batch")
    support_windows: int = Field(12, ge=1, description="K: support windows per location, in training and inference")
    climatology: bool = Field(True, description="the encoder also reads the monthly climatology of the support")
    z_noise: float = Field(0.1, ge=0, description="std of the Gaussian noise added to z in training")
    zero_embedding: bool = Field(False, description="control: z fixed at 0, so the joint stage cannot see the site")
    val_fraction: float = Field(0.0, ge=0, lt=1, description="share of sites held out to monitor training (0: none)")
    split_seed: int = 56
    inference_mode: Literal["stateful", "windowed"] = "stateful"
    nee_rule: Literal["head", "balance"] = "head"
    flux_weight: float = Field(0.1, ge=0, description="weight of the NEE = RECO - GPP penalty")
    class_weight_cap: float = Field(5.0, ge=1, description="cap on the inverse-frequency IGBP/Koppen weights")
    xgb_rounds: int = Field(1000, ge=1)
    xgb_early_stopping: int = Field(50, ge=1, description="rounds without validation gain before XGBoost stops")
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def model_post_init(self, context: Any) -> None:
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(f"feature_set must be one of {', '.join(FEATURE_SETS)}")
        if self.model == "xgboost" and self.val_fraction == 0:
            raise ValueError("xgboost chooses its number of rounds on validation sites: set val_fraction > 0")


def cpu_threads() -> int:
    """Threads one training process may use: ``TAMRL_THREADS`` when set (e.g. 1 for parallel runs), else every core."""
    return int(os.environ.get("TAMRL_THREADS") or os.cpu_count() or 1)


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
        raise ConfigError(f"invalid run config: {validation_message(exc.errors(), 'config')}") from exc
