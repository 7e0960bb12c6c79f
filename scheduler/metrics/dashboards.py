"""Grafana dashboards and Prometheus alert rules, generated from code.

    python -m scheduler.metrics.dashboards --out deploy

writes `deploy/grafana/gpufair-*.json` and `deploy/prometheus/gpufair-rules.yaml`. The
files are committed; a test regenerates them and requires identical bytes, so they never
drift from the metric names in `scheduler.metrics.names`. Edit this module, not the JSON.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

from scheduler.metrics import names as n
from scheduler.metrics.alerts import rules_yaml

DS = {"type": "prometheus", "uid": "${datasource}"}
TEAM = 'team=~"$team"'
RATE = "$__rate_interval"
WINDOW = "1h"  # waits and preemptions are rare events: a rate over an hour reads better


@dataclass(frozen=True, slots=True)
class Target:
    expr: str
    legend: str = ""


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    targets: tuple[Target, ...]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"  # or 'stat'
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True, slots=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    team_variable: bool = True


def _quantile(q: float, bucket: str, by: str, selector: str = "", window: str = RATE) -> str:
    sel = f"{{{selector}}}" if selector else ""
    return f"histogram_quantile({q}, sum by (le{by}) (rate({bucket}_bucket{sel}[{window}])))"


_TRAINING = f'sum by (team) ({n.TEAM_ALLOCATED.name}{{tier="training", {TEAM}}})'

FAIRNESS = Dashboard(
    "gpufair-fairness",
    "gpufair / fair share",
    "Fair share against allocation per team, queue waits, preemptions and Jain's index",
    (
        Panel(
            "Training GPUs held vs fair share",
            (
                Target(_TRAINING, "{{team}} held"),
                Target(f"{n.TEAM_FAIR_SHARE.name}{{{TEAM}}}", "{{team}} fair share"),
            ),
            "none",
            "A team below its share with work waiting may reclaim GPUs from teams above theirs.",
        ),
        Panel(
            "GPUs held by tier",
            (Target(f"sum by (team, tier) ({n.TEAM_ALLOCATED.name}{{{TEAM}}})", "{{team}} {{tier}}"),),
            "none",
        ),
        Panel(
            "Demand (running + waiting, all tiers)",
            (Target(f"{n.TEAM_DEMAND.name}{{{TEAM}}}", "{{team}}"),),
            "none",
        ),
        Panel("Pending pods", (Target(f"{n.TEAM_PENDING_PODS.name}{{{TEAM}}}", "{{team}}"),), "none"),
        Panel(
            "Jain's fairness index (allocated / entitled)",
            (Target(n.JAIN.name, "Jain's index"),),
            "none",
            "1 is perfectly fair; 1/n is one team holding everything. Same definition as the simulator.",
            min=0,
            max=1,
        ),
        Panel(
            "Usage factor 2^(-U/S)",
            (Target(f"{n.TEAM_FACTOR.name}{{{TEAM}}}", "{{team}}"),),
            "none",
            "1 for a team with no recent use; lower for heavy users (decayed GPU-seconds).",
            min=0,
            max=1,
        ),
        Panel(
            "Queue wait p50 by team and tier",
            (Target(_quantile(0.5, n.QUEUE_WAIT.name, ", team, tier", TEAM, WINDOW), "{{team}} {{tier}}"),),
            "s",
        ),
        Panel(
            "Queue wait p95 by team and tier",
            (Target(_quantile(0.95, n.QUEUE_WAIT.name, ", team, tier", TEAM, WINDOW), "{{team}} {{tier}}"),),
            "s",
        ),
        Panel(
            "Preemptions per hour by victim team and kind",
            (
                Target(
                    f"sum by (team, kind) (increase({n.PREEMPTIONS.sample}{{{TEAM}}}[{WINDOW}]))",
                    "{{team}} {{kind}}",
                ),
            ),
            "none",
        ),
        Panel(
            "GPU-hours lost to preemption per hour",
            (
                Target(
                    f"sum by (team) (increase({n.LOST_GPU_HOURS.sample}{{{TEAM}}}[{WINDOW}]))",
                    "{{team}}",
                ),
            ),
            "none",
        ),
    ),
)

_USED = f"{n.TEAM_BUDGET_USED.name}{{{TEAM}}}"
BUDGETS = Dashboard(
    "gpufair-budgets",
    "gpufair / budgets",
    "GPU-hour budgets: burn-down, forecast to the end of the period, use by tier",
    (
        Panel(
            "Budget used vs budget (GPU-hours)",
            (
                Target(_USED, "{{team}} used"),
                Target(f"{n.TEAM_BUDGET.name}{{{TEAM}}}", "{{team}} budget"),
            ),
            "none",
        ),
        Panel(
            "Budget left (GPU-hours)",
            (Target(f"{n.TEAM_BUDGET_LEFT.name}{{{TEAM}}}", "{{team}}"),),
            "none",
            "The burn-down: it falls as the team works and jumps back when the period resets.",
        ),
        Panel(
            "Forecast: GPU-hours used at the end of the period",
            (
                Target(
                    f"{_USED} + on (team) (clamp_min(deriv({_USED}[6h]), 0) * "
                    f"({n.TEAM_BUDGET_RESET.name}{{{TEAM}}} - time()))",
                    "{{team}} forecast",
                ),
                Target(f"{n.TEAM_BUDGET.name}{{{TEAM}}}", "{{team}} budget"),
            ),
            "none",
            "Linear extrapolation of the last 6 hours' burn rate to the period's end.",
        ),
        Panel(
            "Forecast: GPU-hours used 24 hours from now",
            (Target(f"predict_linear({_USED}[6h], 86400)", "{{team}}"),),
            "none",
        ),
        Panel(
            "Budget used (%)",
            (Target(f"100 * {_USED} / on (team) ({n.TEAM_BUDGET.name}{{{TEAM}}} > 0)", "{{team}}"),),
            "percent",
            min=0,
        ),
        Panel(
            "GPU-hours charged per hour by tier",
            (
                Target(
                    f"sum by (team, tier) (increase({n.TEAM_GPU_HOURS.sample}{{{TEAM}}}[{WINDOW}]))",
                    "{{team}} {{tier}}",
                ),
            ),
            "none",
        ),
    ),
)

CLUSTER = Dashboard(
    "gpufair-cluster",
    "gpufair / cluster and scheduler",
    "Utilisation, fragmentation, idle allocated GPUs, and the scheduler's own health",
    (
        Panel(
            "Utilisation (allocated / healthy GPUs)",
            (Target(f"{n.ALLOCATED_GPUS.name} / {n.HEALTHY_GPUS.name}", "utilisation"),),
            "percentunit",
            min=0,
            max=1,
        ),
        Panel(
            "GPUs: healthy, allocated, fragmented",
            (
                Target(n.HEALTHY_GPUS.name, "healthy"),
                Target(n.ALLOCATED_GPUS.name, "allocated"),
                Target(n.FRAGMENTED_GPUS.name, "fragmented"),
            ),
            "none",
            "Fragmented: free GPUs on nodes with less free than the smallest waiting pod needs.",
        ),
        Panel(
            "Allocated but idle GPUs (telemetry)",
            (Target(f"{n.TEAM_IDLE.name}{{{TEAM}}}", "{{team}}"),),
            "none",
        ),
        Panel(
            "Decision cycle duration",
            (
                Target(_quantile(0.5, n.CYCLE_DURATION.name, ""), "p50"),
                Target(_quantile(0.95, n.CYCLE_DURATION.name, ""), "p95"),
                Target(_quantile(0.99, n.CYCLE_DURATION.name, ""), "p99"),
            ),
            "s",
        ),
        Panel(
            "Binds and evictions per second by result",
            (
                Target(f"sum by (result) (rate({n.BINDS.sample}[{RATE}]))", "bind {{result}}"),
                Target(f"sum by (result) (rate({n.EVICTIONS.sample}[{RATE}]))", "evict {{result}}"),
            ),
            "ops",
        ),
        Panel(
            "Node telemetry: stale nodes and unhealthy GPUs",
            (
                Target(f"max({n.TELEMETRY_STALE.name})", "stale nodes"),
                Target(f"max({n.TELEMETRY_UNHEALTHY.name})", "unhealthy GPUs"),
            ),
            "none",
        ),
        Panel(
            "Leader and time since the last cycle",
            (
                Target(f"max({n.LEADER.name})", "leader"),
                Target(f"time() - max({n.LAST_CYCLE.name})", "seconds since last cycle"),
            ),
            "none",
        ),
    ),
    team_variable=True,
)

DASHBOARDS = (FAIRNESS, BUDGETS, CLUSTER)


def _panel_json(p: Panel, pid: int, x: int, y: int) -> dict:
    defaults: dict = {"unit": p.unit}
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    out = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DS,
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": t.expr, "legendFormat": t.legend}
            for i, t in enumerate(p.targets)
        ],
    }
    return out


def dashboard_json(d: Dashboard) -> dict:
    panels, x, y = [], 0, 0
    for i, p in enumerate(d.panels):
        if x + p.width > 24:
            x, y = 0, y + p.height
        panels.append(_panel_json(p, i + 1, x, y))
        x += p.width
    variables: list[dict] = [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"},
    ]
    if d.team_variable:
        # A subtree of the team tree (a department: its path), then the teams in it; "All"
        # teams stands for the subtree's teams, groups included (their series are subtotals).
        in_subtree = f'{n.TEAM_INFO.name}{{path=~"$subtree(/.*)?"}}'
        variables.append(
            {
                "name": "subtree",
                "label": "Subtree",
                "type": "query",
                "datasource": DS,
                "query": {"query": f"label_values({n.TEAM_INFO.name}, path)", "refId": "paths"},
                "definition": f"label_values({n.TEAM_INFO.name}, path)",
                "includeAll": True,
                "allValue": ".*",
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2,
                "sort": 1,
            }
        )
        variables.append(
            {
                "name": "team",
                "label": "Team",
                "type": "query",
                "datasource": DS,
                "query": {"query": f"label_values({in_subtree}, team)", "refId": "teams"},
                "definition": f"label_values({in_subtree}, team)",
                "multi": True,
                "includeAll": True,
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2,
                "sort": 1,
            }
        )
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": ["gpufair"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-24h", "to": "now"},
        "refresh": "30s",
        "timezone": "utc",
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": panels,
    }


def expressions() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, PromQL) for every target of every dashboard."""
    return [(d.uid, p.title, t.expr) for d in DASHBOARDS for p in d.panels for t in p.targets]


def metric_names(expr: str) -> set[str]:
    """The gpufair metric samples an expression reads (histograms by family name)."""
    found = set(re.findall(r"\bgpufair_[a-z_]+", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", f) for f in found}


def render() -> dict[str, str]:
    """Relative path -> file content of everything this module generates."""
    files = {
        f"grafana/{d.uid}.json": json.dumps(dashboard_json(d), indent=2, sort_keys=True) + "\n"
        for d in DASHBOARDS
    }
    files["prometheus/gpufair-rules.yaml"] = rules_yaml()
    return files


def write(out: Path) -> list[Path]:
    written = []
    for rel, content in render().items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scheduler.metrics.dashboards", description="write gpufair's dashboards and rules"
    )
    parser.add_argument("--out", default="deploy", help="folder for grafana/ and prometheus/")
    args = parser.parse_args(argv)
    for path in write(Path(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
