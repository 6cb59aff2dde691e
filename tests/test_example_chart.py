"""The example portal's report plot geometry and its store of report values."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from example_app import chart
from example_app.history import History

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def test_value_ticks_are_round_and_cover_the_data():
    assert chart.nice_ticks(0, 9.5) == [0, 2, 4, 6, 8, 10]
    assert chart.nice_ticks(1000, 1750) == [1000, 1200, 1400, 1600, 1800]
    assert chart.nice_ticks(-0.3, 0.2) == [-0.3, -0.2, -0.1, 0.0, 0.1, 0.2]
    assert chart.nice_ticks(5, 5) == [5, 5.2, 5.4, 5.6, 5.8, 6]  # a flat line still has an axis


def test_time_ticks_are_round_and_few():
    ticks = chart.time_ticks(T0 - timedelta(hours=6), T0)
    assert [t.strftime("%H:%M") for t in ticks] == ["06:00", "07:00", "08:00", "09:00", "10:00",
                                                     "11:00", "12:00"]
    short = chart.time_ticks(T0 - timedelta(minutes=2), T0)
    assert all(t.second in (0, 15, 30, 45) for t in short) and 2 < len(short) <= 9


def test_points_are_scaled_into_the_plot_area_with_the_unit():
    start = T0 - timedelta(hours=1)
    drawn = chart.line_chart([{"label": "rid-power",
                               "points": [(start, 0.0), (T0, 10.0)]}], start, T0, "kW")
    [line] = drawn["lines"]
    first, last = line["dots"]
    assert first == (chart.LEFT, drawn["bottom"])  # the first value at the origin
    assert last == (drawn["right"], drawn["top"])  # the largest at the top right
    assert drawn["unit"] == "kW" and drawn["y_ticks"][-1]["label"] == "10"


def test_the_time_axis_starts_at_young_data():
    series = [{"label": "r", "points": [(T0 - timedelta(minutes=1), 1.0)]}]
    assert chart.window(series, T0 - timedelta(hours=6), T0) == T0 - timedelta(minutes=2)
    old = [{"label": "r", "points": [(T0 - timedelta(hours=9), 1.0)]}]
    assert chart.window(old, T0 - timedelta(hours=6), T0) == T0 - timedelta(hours=6)


def test_units_come_from_the_item_base():
    power = {"item_base": {"kind": "powerReal", "item_units": "W", "si_scale_code": "k"}}
    assert chart.unit_of(power) == "kW"
    assert chart.unit_of({"item_base": {"item_units": "W", "si_scale_code": "none"}}) == "W"
    assert chart.unit_of({}) == "" and chart.unit_of(None) == ""


def test_history_keeps_numbers_replaces_repeats_and_forgets_old_values(tmp_path):
    history = History(str(tmp_path / "portal.sqlite3"), keep=timedelta(hours=6))
    now = datetime.now(timezone.utc).replace(microsecond=0)

    def report(*points):
        return {"report_specifier_id": "spec", "intervals": [
            {"dtstart": at, "values": [{"r_id": "rid-power", "value": value}]}
            for at, value in points]}

    kept = history.add_report("ven-1", report((now - timedelta(hours=7), 1.0),
                                              (now - timedelta(minutes=2), 2.0),
                                              (now - timedelta(minutes=1), "on")))
    assert kept == 2  # the text value is not plotted
    history.add_report("ven-1", report((now - timedelta(minutes=2), 2.5)))  # sent again
    series = history.report_series("ven-1", now - timedelta(days=1))
    assert series == {("spec", "rid-power"): [(now - timedelta(minutes=2), 2.5)]}
    assert history.report_series("ven-2", now - timedelta(days=1)) == {}


def test_history_records_each_transition_once(tmp_path):
    history = History(str(tmp_path / "portal.sqlite3"), keep=timedelta(hours=6))
    history.add_transition("ven-1", 1, "online", T0)
    history.add_transition("ven-1", 1, "online", T0 + timedelta(minutes=5))  # a re-run callback
    history.add_transition("ven-1", 2, "offline", T0 + timedelta(minutes=9))
    assert history.transitions("ven-1") == [
        {"epoch": 2, "kind": "offline", "at": T0 + timedelta(minutes=9)},
        {"epoch": 1, "kind": "online", "at": T0},
    ]
