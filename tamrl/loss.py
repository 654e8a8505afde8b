"""The training loss: weighted MSE on standardised targets plus the flux-balance penalty in physical units.

loss = sum(w * (y_hat - y)^2) / sum(w) + lambda * mean((NEE - (RECO - GPP))^2)

with w = w_qc * w_igbp * w_koppen per day and target (0 where the target is missing), and the penalty computed
on the de-standardised predictions in g C m-2 d-1, where NEE = RECO - GPP is a physical identity.
"""

import torch

FLUX_WEIGHT = 0.1


def flux_balance(pred_physical: torch.Tensor) -> torch.Tensor:
    """Mean squared violation of NEE = RECO - GPP; ``pred_physical`` has GPP, RECO, NEE on the last axis."""
    gpp, reco, nee = pred_physical.unbind(-1)
    return ((nee - (reco - gpp)) ** 2).mean()


def flux_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    flux_weight: float = FLUX_WEIGHT,
) -> torch.Tensor:
    """The TAM-RL loss. ``pred`` and ``target`` are standardised (..., 3); ``weight`` is (..., 3), 0 = ignore.

    ``mean`` and ``std`` are the target scaler, used to return to physical units for the balance penalty.
    """
    se = (pred - torch.nan_to_num(target)) ** 2
    mse = (se * weight).sum() / weight.sum().clamp(min=1e-8)
    return mse + flux_weight * flux_balance(pred * std + mean)
