"""Geometry of the report plot on the VEN page: scaled points and axis ticks for inline SVG.

A few lines of arithmetic serve one line chart better than a charting package: the page stays
one request, works without JavaScript, and its numbers can be checked in the DOM. The template
``_chart.html`` draws what :func:`line_chart` returns.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, Sequence

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40  # room for the axis labels
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering ``[low, high]``."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step / 2:
        ticks.append(round(value, 10))
        value += step
    return ticks


def time_ticks(start: datetime, end: datetime) -> list[datetime]:
    """Round times (every 10, 15 or 30 seconds, 1, 5, 15 or 30 minutes, or 1, 2, 3 or 6 hours)
    in ``[start, end]``, at most 8 of them."""
    span = (end - start).total_seconds()
    steps = [10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600]
    step = next((s for s in steps if span / s <= 8), steps[-1])
    first = math.ceil(start.timestamp() / step) * step
    ticks = []
    moment = first
    while moment <= end.timestamp():
        ticks.append(datetime.fromtimestamp(moment, start.tzinfo))
        moment += step
    return ticks


def line_chart(series: Sequence[dict[str, Any]], start: datetime, end: datetime,
               unit: str) -> dict[str, Any]:
    """Scale ``series`` (``{"label", "points": [(datetime, value), ...]}``) into the plot area.

    :returns: the SVG size, the polylines with their colour and label, the x ticks (time, UTC)
        and y ticks (value, ``unit``) with their pixel positions.
    """
    values = [value for line in series for _, value in line["points"]]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if low > 0 and low < high / 2:
        low = 0.0  # a power reading reads best from zero
    y_ticks = nice_ticks(low, high)
    y_min, y_max = y_ticks[0], y_ticks[-1]
    if y_max == y_min:
        y_max = y_min + 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    ticks = time_ticks(start, end)
    # Seconds on the axis only when the ticks are less than a minute apart.
    tick_format = "%H:%M:%S" if len(ticks) > 1 and (ticks[1] - ticks[0]).seconds < 60 \
        else "%H:%M"
    span = (end - start) or timedelta(seconds=1)

    def x(moment: datetime) -> float:
        return round(LEFT + plot_w * ((moment - start) / span), 1)

    def y(value: float) -> float:
        return round(TOP + plot_h * (1 - (value - y_min) / (y_max - y_min)), 1)

    lines = []
    for index, line in enumerate(series):
        points = [(x(at), y(value)) for at, value in line["points"] if start <= at <= end]
        lines.append({"label": line["label"], "colour": COLOURS[index % len(COLOURS)],
                      "points": " ".join(f"{px},{py}" for px, py in points),
                      "dots": points, "count": len(points),
                      "latest": line["points"][-1] if line["points"] else None})
    return {
        "width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT, "top": TOP,
        "bottom": HEIGHT - BOTTOM, "unit": unit, "lines": lines,
        "x_ticks": [{"x": x(t), "label": t.strftime(tick_format)} for t in ticks],
        "y_ticks": [{"y": y(v), "label": f"{v:g}"} for v in y_ticks],
    }


def window(series: Sequence[dict[str, Any]], since: datetime, now: datetime,
           shortest: timedelta = timedelta(minutes=2)) -> datetime:
    """Where the time axis starts: at the first value when the data is younger than ``since``
    (so that a VEN that began reporting a minute ago is not drawn as a line at the right edge),
    showing at least ``shortest``."""
    first = min((line["points"][0][0] for line in series if line["points"]), default=since)
    return min(max(first, since), now - shortest)


def unit_of(description: dict[str, Any] | None) -> str:
    """The unit of a report data point from its oadrReportDescription's itemBase: ``kW`` for
    powerReal in W with siScaleCode k; ``""`` when it has none."""
    item = (description or {}).get("item_base") or {}
    units = item.get("item_units") or ""
    scale = item.get("si_scale_code") or "none"
    prefix = {"none": "", "micro": "µ"}.get(scale, scale)
    return f"{prefix}{units}" if units else ""
