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
    if len(days) == 1:  # one day is a point: show it as a short flat line so it is visible
        days = [days[0] - dt.timedelta(days=1), days[0]]
        series = [{"bytes_before": 0, "bytes_after": 0}, series[0]]
    if days:
        ax.plot(days, [p["bytes_before"] for p in series], label="before", color="#9a3412", linewidth=2)
        ax.plot(days, [p["bytes_after"] for p in series], label="after", color="#166534", linewidth=2)
        ax.fill_between(days, [p["bytes_after"] for p in series], [p["bytes_before"] for p in series],
                        color="#86efac", alpha=0.35, label="saved")
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
