"""Gap filling over time, shared by training (towers) and the gridded engine (pixels).

Reflectance is usable on clear days only (about a quarter of days); meteorology has a few dropped days. Both
are filled by linear interpolation in time between the nearest valid days, held constant beyond the first and
last valid day, and the distance to the nearest valid day is returned so a model can be told what was filled.
"""

import numpy as np


def fill_over_time(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill invalid entries of ``values`` along axis 0 (time) from the valid ones.

    ``values`` has shape (time, ...) or (time, ..., bands); ``valid`` has shape (time, ...) and marks the days
    to trust (for reflectance: clear and finite). Returns the filled values (float32; NaN only where a series
    has no valid day at all) and, per day, the distance in days to the nearest valid day (0 on a valid day,
    ``inf`` where the series has none).
    """
    values = np.asarray(values, dtype=np.float32)
    valid = np.asarray(valid, dtype=bool)
    extra = values.ndim - valid.ndim
    if values.shape[: valid.ndim] != valid.shape or extra not in (0, 1):
        raise ValueError(f"values {values.shape} and valid {valid.shape} do not line up along time")
    n = valid.shape[0]
    day = np.arange(n, dtype=np.float64).reshape((n,) + (1,) * (valid.ndim - 1))
    prev = np.where(valid, day, -np.inf)
    prev = np.maximum.accumulate(prev, axis=0)
    nxt = np.where(valid, day, np.inf)
    nxt = np.flip(np.minimum.accumulate(np.flip(nxt, axis=0), axis=0), axis=0)
    gap = np.minimum(day - prev, nxt - day)

    has_prev, has_next = np.isfinite(prev), np.isfinite(nxt)
    i_prev = np.where(has_prev, prev, np.where(has_next, nxt, 0)).astype(np.int64)
    i_next = np.where(has_next, nxt, i_prev).astype(np.int64)
    span = (i_next - i_prev).astype(np.float64)
    frac = np.divide(day - i_prev, span, out=np.zeros_like(span), where=span > 0)
    if extra:
        i_prev, i_next, frac = i_prev[..., None], i_next[..., None], frac[..., None]
        i_prev = np.broadcast_to(i_prev, values.shape)
        i_next = np.broadcast_to(i_next, values.shape)
    v_prev = np.take_along_axis(values, i_prev, axis=0)
    v_next = np.take_along_axis(values, i_next, axis=0)
    filled = (v_prev + (v_next - v_prev) * frac).astype(np.float32)
    none = ~(has_prev | has_next)
    filled[none] = np.nan
    return filled, gap.astype(np.float32)
