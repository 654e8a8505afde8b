"""Totals answers as users read them: a JSON document and a CSV table, both carrying units, the NEE rule and the
cube's provenance (the CSV in ``#`` header lines, which ``pandas.read_csv(comment="#")`` skips).

`tamrl totals` and ``POST /flux/region`` write the same documents, from `FORMATS`.
"""

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from jobs.provenance import header_lines, provenance
from jobs.totals import NEE_RULES, CubeSource, RegionTotals, Row, TotalsQuery
from tamrl.features import TARGET_UNITS

UNITS = {"total": "Tg C", "mean": TARGET_UNITS, "area": "km2"}
STATISTICS = ("total", "total_std", "total_p05", "total_p95", "total_cal_p05", "total_cal_p95", "mean")
METHOD = (
    "total: sum over the computed cells and days of the daily ensemble-mean flux x covered fraction x cell area on the "
    "sphere; total_std, total_p05, total_p95: standard deviation and 5th/95th percentiles of the ensemble members' "
    "totals (ensemble spread, not the total error); total_cal_p05, total_cal_p95: sums of the calibrated daily 90% "
    "bounds, an upper bound on the range width if errors partly cancel (docs/ACCOUNTING.md)"
)


def report(source: CubeSource, query: TotalsQuery, results: Sequence[RegionTotals]) -> dict[str, Any]:
    """The JSON document of a totals request."""
    rows = results[0].rows if results else []
    return {
        "cube": source.name,
        "start": rows[0].start.isoformat() if rows else None,
        "end": rows[-1].end.isoformat() if rows else None,
        "freq": query.freq,
        "variables": list(query.variables),
        "units": UNITS,
        "nee_rule": NEE_RULES[source.spec.nee_rule],
        "method": METHOD,
        "features": [_feature(r) for r in results],
        "provenance": provenance(source.name, source.spec, source.attrs),
    }


def _feature(result: RegionTotals) -> dict[str, Any]:
    region = result.region
    return {
        "index": region.index,
        "id": region.id,
        "properties": region.properties,
        "area_km2": result.area_km2,
        "computed_area_km2": result.computed_area_km2,
        "not_computed_area_km2": result.not_computed_area_km2,
        "cells": result.cells,
        "computed_cells": result.computed_cells,
        "not_computed_cells": result.cells - result.computed_cells,
        "notes": list(region.notes),
        "rows": [
            {"start": row.start.isoformat(), "end": row.end.isoformat(), "days": _days(row), **values}
            for row, values in zip(result.rows, result.values, strict=True)
        ],
    }


def _days(row: Row) -> int:
    return row.days.stop - row.days.start


def to_json(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_INDENT_2)


def to_csv(document: dict[str, Any]) -> bytes:
    """One line per feature, row and variable; provenance, units and the NEE rule in ``#`` lines above the table."""
    out = io.StringIO()
    header = {**document["provenance"], "units": "totals in Tg C, mean in g C m-2 d-1, areas in km2",
              "nee_rule": document["nee_rule"], "method": document["method"]}  # fmt: skip
    out.write(header_lines(header))
    columns = ["feature_index", "feature_id", "start", "end", "days", "variable",
               *(f"{s}_TgC" if s != "mean" else "mean_gC_m-2_d-1" for s in STATISTICS),
               "area_km2", "computed_area_km2", "not_computed_area_km2"]  # fmt: skip
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for feature in document["features"]:
        areas = [feature[key] for key in ("area_km2", "computed_area_km2", "not_computed_area_km2")]
        for row in feature["rows"]:
            for name in document["variables"]:
                stats = [_cell(row[name].get(s)) for s in STATISTICS]
                writer.writerow([feature["index"], feature["id"] if feature["id"] is not None else "", row["start"],
                                 row["end"], row["days"], name, *stats, *map(_cell, areas)])  # fmt: skip
    return out.getvalue().encode()


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.8g}"


@dataclass(frozen=True)
class Format:
    media_type: str
    render: Callable[[dict[str, Any]], bytes]


FORMATS = {"json": Format("application/json", to_json), "csv": Format("text/csv", to_csv)}
