"""Admission control: a budget of cube values that all requests together may read at once, so that concurrent heavy
requests cannot exhaust the service's memory, whoever sends them.

Every endpoint that reads cube values estimates its cost before it reads (the values it will read: cells x days x
variables, `dataset_cost`; for a point series the chunks it decodes) and holds that much of the budget while it reads
and answers (`Admission.admit`). A request whose cost does not fit waits up to ``wait`` seconds for others to finish,
then gets BusyError (503 with ``Retry-After``). At most ``queue`` requests wait at once and any more get 503 at once,
so waiting requests never hold every thread of the server's pool. A request costing more than the whole budget runs
alone. The per-request limits (`service.settings.Settings.max_cells`, ...) are checked first and answer 413.

A new endpoint family (polygon totals, map tiles) takes ``AdmissionDep`` and reads inside ``admit(cost)``.
"""

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import xarray as xr

from tamrl.errors import BusyError

RETRY_AFTER_S = 5  # what a 503 asks a client to wait: about one worst-case request on 2 cores


class Admission:
    """A budget of ``budget`` values in flight; requests that do not fit wait up to ``wait`` seconds, at most
    ``queue`` of them at once."""

    def __init__(self, budget: int, wait: float, queue: int):
        self.budget, self.wait, self.queue = budget, wait, queue
        self.in_use = 0  # values admitted now
        self._waiting = 0
        self._changed = threading.Condition()

    @contextmanager
    def admit(self, cost: int, what: str) -> Iterator[None]:
        """Hold ``cost`` values of the budget (at most the whole budget) while the block runs; BusyError when they
        cannot be had within ``wait`` seconds. ``what`` names the work in the error ("a bbox total")."""
        cost = min(cost, self.budget)
        self._acquire(cost, what)
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= cost
                self._changed.notify_all()

    def _acquire(self, cost: int, what: str) -> None:
        with self._changed:
            if self.in_use + cost > self.budget:
                if self._waiting >= self.queue:
                    raise self._busy(cost, what)
                self._waiting += 1
                try:
                    fits = self._changed.wait_for(lambda: self.in_use + cost <= self.budget, self.wait)
                finally:
                    self._waiting -= 1
                if not fits:
                    raise self._busy(cost, what)
            self.in_use += cost

    def _busy(self, cost: int, what: str) -> BusyError:
        return BusyError(
            f"the service is at capacity: {what} reads {cost:,} values and requests in flight read {self.in_use:,} "
            f"of the {self.budget:,} the service reads at once; retry in {RETRY_AFTER_S} s, or ask for a smaller "
            "bbox or fewer days",
            RETRY_AFTER_S,
        )


def dataset_cost(ds: xr.Dataset) -> int:
    """Values a request reads from the (lazy) ``ds``: the sizes of its data variables."""
    return int(sum(math.prod(var.shape) for var in ds.data_vars.values()))
