"""Driver windows and support sets.

Training and evaluation cut each site's record into 45-day windows with a stride of 15 days. A TAM-RL support
set is K driver-only windows of the same location spread evenly over its record, in training (where they never
overlap the query windows they condition) as at inference (where they come from the support years).
"""

import numpy as np

WINDOW = 45
STRIDE = 15


def window_starts(valid: np.ndarray, length: int = WINDOW, stride: int = STRIDE) -> np.ndarray:
    """Start days of the windows whose drivers are valid on every day (``valid`` is a per-day flag)."""
    n = len(valid)
    if n < length:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, n - length + 1, stride)
    bad = np.concatenate([[0], np.cumsum(~np.asarray(valid, dtype=bool))])
    return starts[bad[starts + length] - bad[starts] == 0]


def overlaps(a: np.ndarray, b: np.ndarray, length: int = WINDOW) -> np.ndarray:
    """For each start in ``a``, whether its window overlaps any window starting in ``b``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a), dtype=bool)
    return (np.abs(np.asarray(a)[:, None] - np.asarray(b)[None, :]) < length).any(axis=1)


def sample_episode(
    query_starts: np.ndarray,
    support_starts: np.ndarray,
    n_query: int,
    k_support: int,
    rng: np.random.Generator,
    length: int = WINDOW,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw query windows and a disjoint support set from one site's candidate windows.

    The queries are a run of up to ``n_query`` consecutive candidates at a random place; the support set is up
    to ``k_support`` windows spread evenly over the support candidates that overlap none of the queries (one drawn
    from each of ``k_support`` equal strata), as ``spread_support`` spreads them at inference. When the site is
    too short to leave any support window, queries are dropped from the end of the run until one is left.
    """
    n = len(query_starts)
    first = int(rng.integers(0, max(1, n - n_query + 1)))
    query = query_starts[first : first + n_query]
    while True:
        free = support_starts[~overlaps(support_starts, query, length)]
        if len(free) or len(query) == 1:
            break
        query = query[:-1]
    if len(free) <= k_support:
        return query, free
    strata = np.floor((np.arange(k_support) + rng.random(k_support)) * len(free) / k_support).astype(int)
    return query, free[np.unique(strata)]


def spread_support(n_days: int, k: int, length: int = WINDOW, valid: np.ndarray | None = None) -> np.ndarray:
    """Inference support set: up to ``k`` non-overlapping windows spread evenly over a record of ``n_days``."""
    tiles = window_starts(np.ones(n_days, bool) if valid is None else valid, length, length)
    if len(tiles) <= k:
        return tiles
    return tiles[np.round(np.linspace(0, len(tiles) - 1, k)).astype(int)]
