"""The HTML report comparing policies, its PNG plots, and the terminal table.

`report.html` is self-contained apart from the PNGs beside it (relative links), so the
folder can be copied or served as it is. Replays can hold hundreds of thousands of
samples; every time plot averages the step functions into at most `MAX_POINTS`
equal-width time bins first (exact time-weighted means, see `bin_steps`), so a plot
takes a fraction of a second whatever the replay's length.

Figures are drawn with matplotlib's object API on an Agg canvas: no pyplot, no global
backend switch, nothing left open.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from simulator.model import TIERS, RunResult
from simulator.summary import Series, series

MAX_POINTS = 2000
HOUR = 3600.0
WAIT_LINEAR_BELOW_H = 1.0 / 60.0  # symlog wait axis: linear below one minute, so 0 shows


# ------------------------------------------------------------------ the terminal table


@dataclass(frozen=True, slots=True)
class _Row:
    label: str
    key: str
    fmt: Callable[[Any], str]


def _fraction(v: Any) -> str:
    return f"{v:.3f}"


def _seconds(v: Any) -> str:
    return f"{v:,.0f}"


def _count(v: Any) -> str:
    return f"{int(v):,}"


def _hours(v: Any) -> str:
    return f"{v:,.1f}"


ROWS = (
    _Row("utilization", "utilization", _fraction),
    _Row("jain index", "jain_index", _fraction),
    _Row("max share deviation", "max_share_deviation", _fraction),
    _Row("wait p50 (s)", "wait_p50_s", _seconds),
    _Row("wait p95 (s)", "wait_p95_s", _seconds),
    _Row("wait p99 (s)", "wait_p99_s", _seconds),
    _Row("jobs never started", "never_started", _count),
    _Row("preemptions", "preemptions", _count),
    _Row("preempted GPU-hours", "preempted_gpu_hours", _hours),
    _Row("fragmented fraction", "fragmented_gpu_fraction", _fraction),
)


def _value(summary: dict[str, Any], row: _Row) -> str:
    v = summary.get(row.key)
    return "-" if v is None else row.fmt(v)


def _column_names(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """Policy names; the trace is added where a policy name alone is ambiguous."""
    policies = [str(s.get("policy", "?")) for s in summaries]
    return [
        f"{p} ({s.get('trace', '?')})" if policies.count(p) > 1 else p
        for p, s in zip(policies, summaries, strict=True)
    ]


def side_by_side_table(summaries: Sequence[dict[str, Any]]) -> str:
    """Policies as columns, headline figures as rows; '-' where a figure is undefined."""
    header = ["", *_column_names(summaries)]
    body = [[row.label, *(_value(s, row) for s in summaries)] for row in ROWS]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for r in [header, *body]:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# ------------------------------------------------------------------ downsampling


def bin_steps(
    t: np.ndarray, dt: np.ndarray, values: np.ndarray, max_points: int = MAX_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Step function (value k holds for dt[k] from t[k]) as at most `max_points` points.

    With few samples, the samples themselves. Otherwise the span is cut into
    `max_points` equal bins and each point is the exact time-weighted mean of the steps
    over its bin, placed at the bin's middle; `values` may be (n,) or (n, m).
    """
    n = len(t)
    if n <= max_points or not dt.sum() > 0:
        return t, values
    v = values.reshape(n, -1)
    start = float(t[0])
    end = float(t[-1] + dt[-1])
    edges = np.linspace(start, end, max_points + 1)
    cum = np.vstack([np.zeros((1, v.shape[1])), np.cumsum(v * dt[:, None], axis=0)])
    idx = np.clip(np.searchsorted(t, edges, side="right") - 1, 0, n - 1)
    at_edges = cum[idx] + (edges - t[idx])[:, None] * v[idx]
    widths = np.diff(edges)
    means = (at_edges[1:] - at_edges[:-1]) / widths[:, None]
    mids = (edges[:-1] + edges[1:]) / 2
    return mids, means.reshape((max_points, *values.shape[1:]))


def _thin_sorted(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced points of a long CDF, always keeping the last."""
    if len(x) <= max_points:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
    return x[keep], y[keep]


# ------------------------------------------------------------------ plots


class _LineStyle(TypedDict, total=False):
    """Keyword arguments of `Axes.plot` that `_steps` may set (a plain dict would not say which)."""

    drawstyle: str


def _steps(x: np.ndarray, s: Series) -> _LineStyle:
    """Raw samples are steps; bin means are drawn as a plain line through the bins' middles."""
    return {"drawstyle": "steps-post"} if x is s.t else {}


def _colours(count: int) -> list:
    cmap = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")


def _legend(ax: Any, handles: list | None = None, labels: list | None = None) -> None:
    kwargs: dict[str, Any] = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": "small"}
    if handles is not None:
        kwargs["handles"] = handles
    if labels is not None:
        kwargs["labels"] = labels
    count = len(handles) if handles is not None else len(ax.get_legend_handles_labels()[0])
    ax.legend(ncols=2 if count > 18 else 1, **kwargs)


def _title(result: RunResult, what: str) -> str:
    return f"{what} - policy {result.policy}, trace {result.trace}"


TIME_LABEL = "time from trace start (hours)"


def plot_allocation(result: RunResult, s: Series, path: Path) -> None:
    """Each team's GPUs (solid) against its entitled share (dashed, same colour)."""
    m = len(s.teams)
    x, alloc = bin_steps(s.t, s.dt, s.allocated)
    _, ent = bin_steps(s.t, s.dt, s.entitled)
    hours = x / HOUR
    kw = _steps(x, s)
    colours = _colours(m)
    if m <= 8:
        fig = Figure(figsize=(11, 5))
        ax = fig.add_subplot()
        for j in range(m):
            ax.plot(hours, alloc[:, j], color=colours[j], lw=1.2, **kw)
            ax.plot(hours, ent[:, j], color=colours[j], lw=1.2, ls="--", **kw)
        handles = [Line2D([], [], color=colours[j], lw=2) for j in range(m)]
        handles += [Line2D([], [], color="grey", lw=1.2), Line2D([], [], color="grey", lw=1.2, ls="--")]
        _legend(ax, handles, [*s.teams, "allocated", "entitled share"])
        ax.set_xlabel(TIME_LABEL)
        ax.set_ylabel("GPUs")
        ax.grid(alpha=0.3)
        ax.set_title(_title(result, "GPUs allocated (solid) vs entitled share (dashed)"))
    else:
        cols = 4
        rows = math.ceil(m / cols)
        fig = Figure(figsize=(14, 2.4 * rows + 0.8))
        axes = fig.subplots(rows, cols, sharex=True, squeeze=False)
        for j, name in enumerate(s.teams):
            ax = axes[j // cols][j % cols]
            ax.plot(hours, alloc[:, j], color=colours[j], lw=1.0, **kw)
            ax.plot(hours, ent[:, j], color="black", lw=1.0, ls="--", **kw)
            ax.set_title(name, fontsize="medium")
            ax.grid(alpha=0.3)
            if j % cols == 0:
                ax.set_ylabel("GPUs")
        for j in range(m, rows * cols):
            axes[j // cols][j % cols].set_visible(False)
        for c in range(cols):
            last = min(rows - 1, (m - 1 - c) // cols) if c < m else 0
            axes[last][c].set_xlabel(TIME_LABEL)
            axes[last][c].xaxis.set_tick_params(labelbottom=True)
        fig.suptitle(_title(result, "GPUs allocated (solid, colour) vs entitled share (dashed, black)"))
        fig.tight_layout()
    _save(fig, path)


def plot_levels(result: RunResult, s: Series, path: Path) -> None:
    """Teams in a tree: one panel per level, each team or group of that level with its
    subtree's GPUs (solid) against its subtree's entitled share (dashed, same colour)."""
    parent = {t.name: t.parent for t in result.teams}
    col = {name: j for j, name in enumerate(s.teams)}

    def chain(name: str) -> list[str]:
        out = [name]
        while (up := parent.get(out[-1])) is not None and up not in out:
            out.append(up)
        return out

    depth = {name: len(chain(name)) - 1 for name in parent}
    levels = max(depth.values(), default=0) + 1
    x, alloc = bin_steps(s.t, s.dt, s.allocated)
    _, ent = bin_steps(s.t, s.dt, s.entitled)
    hours, kw = x / HOUR, _steps(x, s)
    fig = Figure(figsize=(11, 3.2 * levels + 0.6))
    axes = fig.subplots(levels, 1, sharex=True, squeeze=False)
    for level in range(levels):
        ax = axes[level][0]
        names = sorted(n for n, d in depth.items() if d == level)
        colours = _colours(len(names))
        for k, name in enumerate(names):
            under = [col[m] for m in s.teams if m in parent and name in chain(m)]
            ax.plot(hours, alloc[:, under].sum(axis=1), color=colours[k], lw=1.2, label=name, **kw)
            ax.plot(hours, ent[:, under].sum(axis=1), color=colours[k], lw=1.0, ls="--", **kw)
        ax.set_title(f"level {level}", fontsize="medium")
        ax.set_ylabel("GPUs")
        ax.grid(alpha=0.3)
        if len(names) <= 18:
            _legend(ax)
    axes[-1][0].set_xlabel(TIME_LABEL)
    fig.suptitle(_title(result, "Per level: subtree GPUs (solid) vs entitled share (dashed)"))
    fig.tight_layout()
    _save(fig, path)


_WAIT_TICKS = (
    (0.0, "0"),
    (1 / 60, "1 min"),
    (10 / 60, "10 min"),
    (1.0, "1 h"),
    (6.0, "6 h"),
    (24.0, "1 d"),
    (168.0, "1 w"),
    (720.0, "30 d"),
)


def _cdf_panel(ax: Any, groups: dict[str, list[float]], counts: dict[str, int], title: str) -> None:
    colours = _colours(len(groups))
    drawn = False
    for (name, waits), colour in zip(groups.items(), colours, strict=True):
        if counts[name] == 0:
            continue
        xs = np.sort(np.asarray(waits, dtype=float)) / HOUR
        ys = np.arange(1, len(xs) + 1) / counts[name]
        xs, ys = _thin_sorted(np.concatenate([[0.0], xs]), np.concatenate([[0.0], ys]))
        never = counts[name] - len(waits)
        label = f"{name} ({counts[name]} jobs" + (f", {never} never started)" if never else ")")
        ax.plot(xs, ys, drawstyle="steps-post", color=colour, lw=1.3, label=label)
        drawn = True
    ax.set_xscale("symlog", linthresh=WAIT_LINEAR_BELOW_H, linscale=0.3)
    longest = max((max(w) for w in groups.values() if w), default=0.0) / HOUR
    ticks = [(h, label) for h, label in _WAIT_TICKS if h <= max(longest, 1.0) * 1.0001]
    ax.set_xticks([h for h, _ in ticks], [label for _, label in ticks])
    ax.set_xlim(0, max(longest * 1.1, 1.0))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("wait from submission to first start (hours; log scale above 1 minute)")
    ax.set_ylabel("fraction of the jobs started within that wait")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if drawn:
        _legend(ax)
    else:
        ax.text(0.5, 0.5, "no jobs", ha="center", va="center", transform=ax.transAxes)


def plot_wait_cdf(result: RunResult, teams: Sequence[str], path: Path) -> None:
    """Wait CDFs per team and per tier; jobs never started keep a curve below 1."""
    team_waits: dict[str, list[float]] = {t: [] for t in teams}
    tier_waits: dict[str, list[float]] = {t: [] for t in TIERS}
    team_count = dict.fromkeys(teams, 0)
    tier_count = dict.fromkeys(TIERS, 0)
    for job in result.jobs:
        tier_waits.setdefault(job.tier, [])
        tier_count.setdefault(job.tier, 0)
        team_waits.setdefault(job.team, [])
        team_count.setdefault(job.team, 0)
        team_count[job.team] += 1
        tier_count[job.tier] += 1
        if math.isfinite(job.start_s):
            team_waits[job.team].append(job.wait_s)
            tier_waits[job.tier].append(job.wait_s)
    fig = Figure(figsize=(15, 5.5))
    left, right = fig.subplots(1, 2)
    _cdf_panel(left, team_waits, team_count, "per team")
    _cdf_panel(right, tier_waits, tier_count, "per tier")
    fig.suptitle(_title(result, "Wait-time CDF"))
    fig.tight_layout()
    _save(fig, path)


def plot_utilization(result: RunResult, s: Series, summary: dict[str, Any], path: Path) -> None:
    """Busy and fragmented GPUs as fractions of the healthy ones, over time."""
    healthy = np.where(s.healthy > 0, s.healthy, np.nan)
    fractions = np.column_stack([s.busy / healthy, s.fragmented / healthy])
    fractions = np.nan_to_num(fractions, nan=0.0)
    x, y = bin_steps(s.t, s.dt, fractions)
    fig = Figure(figsize=(11, 4.5))
    ax = fig.add_subplot()
    util, frag = summary.get("utilization"), summary.get("fragmented_gpu_fraction")
    kw = _steps(x, s)
    ax.plot(x / HOUR, y[:, 0], color="tab:blue", lw=1.2, label="busy / healthy GPUs" + _mean_note(util), **kw)
    ax.plot(
        x / HOUR, y[:, 1], color="tab:red", lw=1.0, label="fragmented / healthy GPUs" + _mean_note(frag), **kw
    )
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("fraction of healthy GPUs")
    ax.grid(alpha=0.3)
    _legend(ax)
    ax.set_title(_title(result, "Utilisation"))
    _save(fig, path)


def _mean_note(v: float | None) -> str:
    return "" if v is None else f" (mean {v:.3f})"


def plot_budget(result: RunResult, s: Series, budgeted: Sequence[str], path: Path) -> None:
    """GPU-hours left in each budgeted team's current period; resets show as jumps up."""
    cols = [s.teams.index(name) for name in budgeted]
    used = s.budget_used[:, cols]
    # A sample without a team's figure keeps the previous one (0 before the first).
    filled = np.where(np.isnan(used), 0.0, used)
    if np.isnan(used).any():
        for c in range(used.shape[1]):
            good = ~np.isnan(used[:, c])
            last = np.maximum.accumulate(np.where(good, np.arange(len(good)), -1))
            filled[:, c] = np.where(last >= 0, used[np.maximum(last, 0), c], 0.0)
    budgets = np.array([float(result.budgets[name] or 0.0) for name in budgeted])
    x, y = bin_steps(s.t, s.dt, budgets[None, :] - filled)
    colours = _colours(len(budgeted))
    fig = Figure(figsize=(11, 4.5))
    ax = fig.add_subplot()
    kw = _steps(x, s)
    for c, name in enumerate(budgeted):
        label = f"{name} ({budgets[c]:,.0f} GPU-h/period)"
        ax.plot(x / HOUR, y[:, c], color=colours[c], lw=1.2, label=label, **kw)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("budget left this period (GPU-hours)")
    ax.grid(alpha=0.3)
    _legend(ax)
    ax.set_title(_title(result, "Budget burn-down"))
    _save(fig, path)


# ------------------------------------------------------------------ the page


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "policy"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1500px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; border: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
"""

_NOTE = (
    "Entitled share: weighted max-min fair share (water-filling) of the healthy GPUs over "
    "every team's demand, with the teams' weights, guaranteedGPUs and maxGPUs; the same "
    "yardstick for every policy. Jain index: time-weighted mean of Jain's index of "
    "allocated/entitled over the teams with demand (1 is perfectly fair). Max share "
    "deviation: the largest time-weighted mean |allocated - entitled| / healthy GPUs of "
    "any team. Waits are over the jobs that started."
)


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _opt(v: Any, fmt: Callable[[Any], str]) -> str:
    return "-" if v is None else fmt(v)


def _team_table(summary: dict[str, Any]) -> str:
    header = [
        "team",
        "jobs",
        "never started",
        "GPU-hours",
        "entitled GPU-hours",
        "wait p50 (s)",
        "wait p95 (s)",
        "wait p99 (s)",
        "budget (GPU-h/period)",
        "budget used (GPU-h)",
    ]
    rows = []
    for name, t in summary.get("teams", {}).items():
        rows.append(
            [
                name,
                _count(t["jobs"]),
                _count(t["never_started"]),
                _opt(t["gpu_hours"], _hours),
                _opt(t["entitled_gpu_hours"], _hours),
                _opt(t["wait_p50_s"], _seconds),
                _opt(t["wait_p95_s"], _seconds),
                _opt(t["wait_p99_s"], _seconds),
                _opt(t["budget_gpu_hours"], _hours),
                _opt(t["budget_used_gpu_hours"], _hours),
            ]
        )
    return _html_table(header, rows)


def _tier_table(summary: dict[str, Any]) -> str:
    header = ["tier", "jobs", "never started", "wait p50 (s)", "wait p95 (s)", "wait p99 (s)"]
    rows = [
        [
            name,
            _count(t["jobs"]),
            _count(t["never_started"]),
            _opt(t["wait_p50_s"], _seconds),
            _opt(t["wait_p95_s"], _seconds),
            _opt(t["wait_p99_s"], _seconds),
        ]
        for name, t in summary.get("tiers", {}).items()
    ]
    return _html_table(header, rows)


def write_report(
    results: Sequence[RunResult], summaries: Sequence[dict[str, Any]], out_dir: Path, *, intro_html: str = ""
) -> Path:
    """Write `out_dir/report.html` and its PNGs (summaries[i] belongs to results[i]);
    `intro_html` (already escaped) goes first, e.g. the what-if's largest changes."""
    if len(results) != len(summaries):
        raise ValueError(f"{len(results)} results but {len(summaries)} summaries; give one summary each")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = _column_names(summaries)
    top = _html_table(["", *columns], [[row.label, *(_value(s, row) for s in summaries)] for row in ROWS])
    slugs: list[str] = []
    for column in columns:
        slug = base = _slug(column)
        i = 2
        while slug in slugs:
            slug, i = f"{base}-{i}", i + 1
        slugs.append(slug)
    sections = []
    for result, summary, column, slug in zip(results, summaries, columns, slugs, strict=True):
        s = series(result)
        images: list[tuple[str, str]] = []
        name = f"{slug}-allocation.png"
        plot_allocation(result, s, out_dir / name)
        images.append((name, "GPUs allocated against entitled share, per team"))
        if any(t.parent is not None for t in result.teams):
            name = f"{slug}-levels.png"
            plot_levels(result, s, out_dir / name)
            images.append((name, "shares per level of the team tree"))
        name = f"{slug}-wait-cdf.png"
        plot_wait_cdf(result, s.teams, out_dir / name)
        images.append((name, "wait-time CDF per team and per tier"))
        name = f"{slug}-utilization.png"
        plot_utilization(result, s, summary, out_dir / name)
        images.append((name, "utilisation over time"))
        budgeted = [t for t in s.teams if result.budgets.get(t) is not None]
        if budgeted:
            name = f"{slug}-budget.png"
            plot_budget(result, s, budgeted, out_dir / name)
            images.append((name, "budget burn-down per team"))
        parts = [
            f'<section id="{_esc(slug)}"><h2>{_esc(column)}</h2>',
            f"<p>trace {_esc(result.trace)}, {result.gpus:,} GPUs, {len(result.jobs):,} jobs, "
            f"{len(result.samples):,} samples, replay took {result.wall_seconds:,.1f} s</p>",
            "<h3>Teams</h3>",
            _team_table(summary),
            "<h3>Tiers</h3>",
            _tier_table(summary),
        ]
        if not budgeted:
            parts.append('<p class="note">No team has a budget: no burn-down plot.</p>')
        parts += [f'<img src="{_esc(src)}" alt="{_esc(alt)}">' for src, alt in images]
        parts.append("</section>")
        sections.append("\n".join(parts))
    toc = " | ".join(f'<a href="#{_esc(g)}">{_esc(c)}</a>' for c, g in zip(columns, slugs, strict=True))
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>gpufair simulator report</title>
<style>{_CSS}</style>
</head>
<body>
<h1>gpufair simulator report</h1>
{intro_html}
<h2>Policies side by side</h2>
{top}
<p class="note">{_esc(_NOTE)}</p>
<p>{toc}</p>
{"".join(sections)}
</body>
</html>
"""
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
