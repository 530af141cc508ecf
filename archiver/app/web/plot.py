"""The overview's plot: cumulative bytes before and after archiving, per day, as an SVG drawn by
matplotlib (already a dependency; nothing is fetched by the browser)."""

from __future__ import annotations

import datetime as dt
import functools
import io

from ..output import human_bytes


def _human(n: float, _pos=None) -> str:
    return human_bytes(n)


def bytes_svg(series: list[dict]) -> str:
    """``series``: ``committed_summary(...)['over_time']``. An empty catalog gets an empty frame.
    Drawing takes a few hundred ms, so the last few plots are kept (keyed by their data: a new
    commit changes the data and so draws anew)."""
    return _svg(tuple((p["day"], p["bytes_before"], p["bytes_after"]) for p in series))


def _one_day(ax, day: dt.date, p: dict) -> None:
    """The totals of the only day with commits: a bar each for before and after, labelled."""
    before, after = p["bytes_before"], p["bytes_after"]
    bars = ax.bar(["before", "after"], [before, after], color=["#9a3412", "#166534"], width=0.5)
    ax.bar_label(bars, labels=[human_bytes(before), human_bytes(after)], fontsize=8, padding=2)
    saved = f"saved {human_bytes(before - after)}" + (f" ({(before - after) / before:.1%})" if before else "")
    ax.set_title(f"all archived on {day.isoformat()}: {saved}", fontsize=9)
    ax.margins(y=0.15)


@functools.lru_cache(maxsize=8)
def _svg(points: tuple) -> str:
    series = [{"day": d, "bytes_before": b, "bytes_after": a} for d, b, a in points]
    import matplotlib  # heavy: matplotlib, slow to import, only for plots

    matplotlib.use("Agg", force=False)
    import matplotlib.dates as mdates  # heavy: matplotlib, slow to import, only for plots
    from matplotlib.figure import Figure  # heavy: matplotlib, slow to import, only for plots
    from matplotlib.ticker import FuncFormatter  # heavy: matplotlib, slow to import, only for plots

    fig = Figure(figsize=(7.5, 2.6), dpi=96)
    ax = fig.add_subplot()
    days = [dt.date.fromisoformat(p["day"]) for p in series]
    if len(days) == 1:  # one day with data: its two totals as bars, not a line from an invented zero
        _one_day(ax, days[0], series[0])
    elif days:
        before, after = [p["bytes_before"] for p in series], [p["bytes_after"] for p in series]
        ax.plot(days, before, label="before", color="#9a3412", linewidth=2, marker="o", markersize=3)
        ax.plot(days, after, label="after", color="#166534", linewidth=2, marker="o", markersize=3)
        ax.fill_between(days, after, before, color="#86efac", alpha=0.35, label="saved")
        ax.set_xlim(days[0], days[-1])  # from the first day anything was archived: no empty days before it
        ax.legend(loc="upper left", frameon=False, fontsize=8)
        span = (days[-1] - days[0]).days
        ax.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, span // 6)) if span <= 60 else mdates.AutoDateLocator())
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
        fig.autofmt_xdate()
    else:
        ax.text(0.5, 0.5, "nothing archived yet", ha="center", va="center", transform=ax.transAxes)
    ax.yaxis.set_major_formatter(FuncFormatter(_human))
    ax.set_ylabel("bytes (cumulative)", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text: smaller, faster, selectable
        fig.savefig(out, format="svg")
    svg = out.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog: the SVG is inlined in the page
