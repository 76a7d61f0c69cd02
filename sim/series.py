"""How a run's time series are kept in bounded memory: columnar change-points, thinned past a cap.

Both series are step functions: a row ``(time, values...)`` says "from ``time`` on, the state is
``values``". Rows live in one flat ``array('d')`` per series (row-major, eight bytes a value, no
Python object per row or per value); pandas tables are built once, after the run.

Up to ``cap`` rows a series keeps every change-point, exactly as it was recorded (the goldens and
every bundled scenario stay far below the default caps). When a series reaches its cap it is
*thinned*: time is cut into cells of width ``dt`` and only the last change-point of each cell is
kept (per model, for the call series), so the stored state at every kept time is exact and only
changes between kept rows are merged away. ``dt`` starts at about a quarter of the cap over the
span recorded so far and doubles each time the series fills again, so a series never holds more
than ``cap`` rows, however long the run: memory is bounded by the cap, resolution by
``simulated time / cap``. Everything the summary needs is kept exactly on the side: time
integrals of the scheduler series (the ``*_time_mean`` metrics) and, in the call series, per-row
counts of the calls sent, answered and answered 429 since the model's previous row, so counts in
any time window stay exact after thinning (docs/metrics.md, "Time series").
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

import numpy as np


def weighted_sum(weights: np.ndarray, values: np.ndarray) -> float:
    """``sum(weights * values)``, correctly rounded (``math.fsum``). Not ``np.dot``: a long dot
    product goes to the BLAS library, whose result depends on its number of threads (a
    machine's cores or ``OPENBLAS_NUM_THREADS``), so the same run gave different last digits on
    different machines; its spinning worker threads also cost CPU after every call."""
    return math.fsum((np.asarray(weights, dtype=float) * np.asarray(values, dtype=float)).tolist())


#: The smallest cell width (seconds), used when the rows so far all share one instant.
MIN_CELL = 1e-9


def _rows(data: array, width: int) -> np.ndarray:
    """The stored rows as an (n, width) view of the flat array (no copy)."""
    return np.frombuffer(data, dtype=np.float64).reshape(-1, width) if len(data) else np.zeros((0, width))


def _from_rows(rows: np.ndarray) -> array:
    out = array("d")
    out.frombytes(np.ascontiguousarray(rows, dtype=np.float64).tobytes())
    return out


def _first_cell_width(times: np.ndarray, cap: int) -> float:
    span = float(times[-1] - times[0]) if len(times) else 0.0
    return max(span / max(1, cap // 4), MIN_CELL)


class StepSeries:
    """The scheduler series: one row per change of state, thinned past ``cap`` rows.

    ``mean_columns`` are the column indices whose exact time integral is kept once the series is
    thinned (stored rows no longer give it). ``cap=None`` keeps every row (full detail).
    """

    __slots__ = ("width", "cap", "data", "n", "last", "dt", "merged", "integrals", "mean_columns", "first_time")

    def __init__(self, width: int, cap: int | None, mean_columns: Sequence[int]) -> None:
        if cap is not None and cap < 2:
            raise ValueError(f"a series cap must be at least 2 rows, got {cap}")
        self.width = width
        self.cap = cap
        self.data = array("d")
        self.n = 0
        self.last: tuple[float, ...] | None = None
        #: cell width once thinned; None while every change-point is kept
        self.dt: float | None = None
        #: samples merged into a later row of the same cell
        self.merged = 0
        self.mean_columns = tuple(mean_columns)
        self.integrals = [0.0] * len(self.mean_columns)
        self.first_time = 0.0

    @property
    def thinned(self) -> bool:
        return self.dt is not None

    def add(self, row: tuple[float, ...]) -> None:
        """A sample; ignored if nothing but the time changed, replaces the last row at the same instant."""
        last = self.last
        if last is not None:
            if last[1:] == row[1:]:
                return
            w = self.width
            if last[0] == row[0]:
                self.data[-w:] = array("d", row)
                self.last = row
                return
            if self.dt is None and self.cap is not None and self.n >= self.cap:
                self._start_thinning()
            dt = self.dt
            if dt is not None:
                span = row[0] - last[0]
                integrals = self.integrals
                for j, k in enumerate(self.mean_columns):
                    integrals[j] += span * last[k]
                if self.n > 1 and row[0] // dt == last[0] // dt:
                    self.data[-w:] = array("d", row)
                    self.last = row
                    self.merged += 1
                    return
                if self.n >= self.cap:  # type: ignore[operator]  # thinned implies a cap
                    self._compact()
        else:
            self.first_time = row[0]
        self.data.extend(row)
        self.n += 1
        self.last = row

    def _start_thinning(self) -> None:
        rows = _rows(self.data, self.width)
        t = rows[:, 0]
        widths = np.diff(t)
        for j, k in enumerate(self.mean_columns):
            self.integrals[j] = weighted_sum(widths, rows[:-1, k])
        self.dt = _first_cell_width(t, self.cap or 2)
        self._compact()

    def _compact(self) -> None:
        """Keep the first row and the last row of each cell, doubling ``dt`` until half the cap is free."""
        rows = _rows(self.data, self.width)
        cap = self.cap or 2
        while True:
            cell = np.floor_divide(rows[:, 0], self.dt)
            keep = np.ones(len(rows), dtype=bool)
            keep[:-1] = cell[1:] != cell[:-1]
            keep[0] = True
            if int(keep.sum()) <= max(2, cap // 2):
                break
            self.dt *= 2.0  # type: ignore[operator]
        kept = rows[keep]
        self.merged += len(rows) - len(kept)
        self.data = _from_rows(kept)
        self.n = len(kept)

    def time_integral(self, j: int, end: float) -> float:
        """Exact integral of mean column ``j`` from the first sample to ``end`` (thinned series only)."""
        last = self.last
        assert last is not None and self.dt is not None
        return self.integrals[j] + (max(end, last[0]) - last[0]) * last[self.mean_columns[j]]

    def rows(self) -> np.ndarray:
        """The stored rows, (n, width) float64 (a copy, safe to keep after the run)."""
        return _rows(self.data, self.width).copy()


#: Call-series columns: state after the row's event, then counts since the model's previous row.
CALL_TIME, CALL_MODEL, CALL_SENT, CALL_ANSWERED, CALL_429 = 0, 1, 6, 7, 8
CALL_WIDTH = 9


class CallSeries:
    """The per-model call series: one row per call sent or answered, thinned per model past ``cap``.

    Row: ``time, model, in_flight, waiting, current_limit, cooldown_until, sent, answered,
    answered_429``; the last three count the calls of that model sent, answered and answered 429
    at the row's time or since the model's previous row (0 or 1 until the series is thinned).
    """

    __slots__ = ("cap", "data", "n", "dt", "merged", "last_index", "last_cell")

    def __init__(self, n_models: int, cap: int | None) -> None:
        if cap is not None and cap < 2 * max(1, n_models):
            raise ValueError(f"a call-series cap must be at least 2 rows per model, got {cap}")
        self.cap = cap
        self.data = array("d")
        self.n = 0
        self.dt: float | None = None
        self.merged = 0
        #: per model, once thinned: index and cell of its last stored row (-1: none yet)
        self.last_index = [-1] * n_models
        self.last_cell = [0.0] * n_models

    @property
    def thinned(self) -> bool:
        return self.dt is not None

    def add(
        self,
        now: float,
        model: int,
        in_flight: int,
        waiting: int,
        limit: int,
        cooldown_until: float,
        sent: int,
        answered: int,
        rate_limited: int,
    ) -> None:
        dt = self.dt
        if dt is None:
            if self.cap is None or self.n < self.cap:
                self.data.extend((now, model, in_flight, waiting, limit, cooldown_until, sent, answered, rate_limited))
                self.n += 1
                return
            self._compact()
            dt = self.dt
            assert dt is not None
        cell = now // dt
        i = self.last_index[model]
        if i < 0 or self.last_cell[model] != cell:
            if self.n >= self.cap:  # type: ignore[operator]
                self._compact()
                dt = self.dt
                assert dt is not None
                cell = now // dt
                i = self.last_index[model]
        if i >= 0 and self.last_cell[model] == cell:
            data = self.data
            b = i * CALL_WIDTH
            data[b] = now
            data[b + 2] = in_flight
            data[b + 3] = waiting
            data[b + 4] = limit
            data[b + 5] = cooldown_until
            data[b + 6] += sent
            data[b + 7] += answered
            data[b + 8] += rate_limited
            self.merged += 1
            return
        self.data.extend((now, model, in_flight, waiting, limit, cooldown_until, sent, answered, rate_limited))
        self.last_index[model] = self.n
        self.last_cell[model] = cell
        self.n += 1

    def _compact(self) -> None:
        """Keep the last row per (model, cell), counts summed, doubling ``dt`` until half the cap is free."""
        rows = _rows(self.data, CALL_WIDTH)
        n = len(rows)
        cap = self.cap or 2
        if self.dt is None:
            self.dt = _first_cell_width(rows[:, CALL_TIME], cap)
        model = rows[:, CALL_MODEL]
        while True:
            cell = np.floor_divide(rows[:, CALL_TIME], self.dt)
            order = np.lexsort((cell, model))  # by model, then cell; ties keep the row order
            ms, cs = model[order], cell[order]
            start = np.ones(n, dtype=bool)
            start[1:] = (ms[1:] != ms[:-1]) | (cs[1:] != cs[:-1])
            if int(start.sum()) <= max(2, cap // 2):
                break
            self.dt *= 2.0
        starts = np.flatnonzero(start)
        last = order[np.append(starts[1:], n) - 1]  # each group's last row, as a row index
        kept = rows[last].copy()
        kept[:, CALL_SENT:] = np.add.reduceat(rows[order, CALL_SENT:], starts, axis=0)
        kept = kept[np.argsort(last, kind="stable")]  # back in row order
        self.merged += n - len(kept)
        self.data = _from_rows(kept)
        self.n = len(kept)
        self.last_index = [-1] * len(self.last_index)
        for idx, m in enumerate(kept[:, CALL_MODEL].astype(np.int64).tolist()):
            self.last_index[m] = idx
        for m, idx in enumerate(self.last_index):
            if idx >= 0:
                self.last_cell[m] = kept[idx, CALL_TIME] // self.dt

    def rows(self) -> np.ndarray:
        """The stored rows in time order, (n, 9) float64 (a copy). Thinned rows are sorted by time
        (stable), since a model's last row is updated in place while other models' rows follow it."""
        rows = _rows(self.data, CALL_WIDTH).copy()
        if self.dt is not None and len(rows):
            rows = rows[np.argsort(rows[:, CALL_TIME], kind="stable")]
        return rows
