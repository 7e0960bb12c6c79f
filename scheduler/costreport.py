"""GPU-hours per team, tier and GPU model for a period, with an optional price per GPU-hour.

The team and tier totals are the ledger's own period rows (`ledger_period_usage`): the
GPU-hours the daemon charged, the same ones its `gpufair_team_gpu_hours_used` counter
counts, so a report and the metrics agree for the same period. A row belongs to the
period when its budget period starts in it (teams without a budget are booked per
calendar month, so a monthly report of them is exact; a team with weekly periods is
reported by the weeks that start in the month). The split by GPU model comes from the gang
history's runs (schema 0004): each (team, tier) total is shared out in proportion to the
GPU-seconds its runs held on each model in the period; charges with no run history (a
ledger older than 0004) are model `unknown`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlmodel import Session, col, select

from scheduler.core.errors import InvalidInput
from scheduler.ledger.history import runs_between
from scheduler.ledger.store import Ledger
from scheduler.ledger.tables import PeriodUsage
from scheduler.ledger.trace import parse_instant

UNKNOWN_MODEL = "unknown"
COLUMNS = ("team", "tier", "gpu_model", "gpu_hours", "price_per_gpu_hour", "cost")
_MONTH = re.compile(r"(\d{4})-(\d{2})")


def period_bounds_of(text: str) -> tuple[float, float]:
    """[start, end) in UTC epoch seconds of `2026-11` (a calendar month, UTC) or
    `2026-11-01..2026-11-15` (dates or date-times, the end excluded)."""
    if ".." in text:
        a, b = text.split("..", 1)
        start, end = parse_instant(a, "--period"), parse_instant(b, "--period")
    else:
        m = _MONTH.fullmatch(text.strip())
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise InvalidInput(
                "report", "--period", f"{text!r} is not a period", "give a month (2026-11) or FROM..TO dates"
            )
        year, month = int(m.group(1)), int(m.group(2))
        start = datetime(year, month, 1, tzinfo=UTC).timestamp()
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC).timestamp()
    if not end > start:
        raise InvalidInput("report", "--period", f"{text!r} ends before it starts", "give FROM before TO")
    return start, end


@dataclass(frozen=True, slots=True)
class Prices:
    """Price per GPU-hour by GPU model (`default` for the models not listed)."""

    per_model: Mapping[str, float]
    default: float | None = None
    currency: str = ""

    def of(self, model: str) -> float:
        if model in self.per_model:
            return self.per_model[model]
        if self.default is None:
            raise InvalidInput(
                "prices",
                f"perGPUHour.{model}",
                f"no price for GPU model {model!r}",
                f"add {model}: PRICE under perGPUHour, or a default",
            )
        return self.default


def load_prices(text: str, source: str = "prices") -> Prices:
    """`currency: EUR`, `perGPUHour: {H100: 2.9, A100: 1.4}`, optional `default: 1.0`."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(source, "(yaml)", f"cannot be parsed: {exc}", "fix the YAML syntax") from exc
    if not isinstance(doc, Mapping) or not isinstance(doc.get("perGPUHour"), Mapping):
        raise InvalidInput(source, "perGPUHour", "missing", "give perGPUHour: {MODEL: PRICE, ...}")
    unknown = set(doc) - {"currency", "perGPUHour", "default"}
    if unknown:
        raise InvalidInput(source, sorted(unknown)[0], "unknown key", "use currency, perGPUHour and default")

    def price(where: str, value: Any) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise InvalidInput(source, where, f"{value!r} is not a price", "give a number >= 0")
        return float(value)

    per_model = {str(k): price(f"perGPUHour.{k}", v) for k, v in doc["perGPUHour"].items()}
    default = None if doc.get("default") is None else price("default", doc["default"])
    return Prices(per_model, default, str(doc.get("currency") or ""))


@dataclass(frozen=True, slots=True)
class Line:
    team: str
    tier: str
    gpu_model: str
    gpu_hours: float
    price_per_gpu_hour: float | None = None
    cost: float | None = None


def cost_report(ledger: Ledger, start_s: float, end_s: float, prices: Prices | None = None) -> list[Line]:
    """One line per (team, tier, GPU model) with GPU-hours in [start_s, end_s)."""
    with Session(ledger.engine) as s:
        totals: dict[tuple[str, str], float] = defaultdict(float)
        stmt = select(PeriodUsage).where(
            col(PeriodUsage.period_start_s) >= start_s, col(PeriodUsage.period_start_s) < end_s
        )
        for row in s.exec(stmt):
            totals[(row.team, row.tier)] += row.gpu_seconds
    held: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    last = ledger.checkpoint("last_accrual_s")
    for run in runs_between(ledger.engine, start_s, end_s):
        stop = run.end_s if run.end_s is not None else (last if last is not None else end_s)
        seconds = min(stop, end_s) - max(run.start_s, start_s)
        if seconds > 0:
            held[(run.team, run.tier)][run.gpu_model or UNKNOWN_MODEL] += run.gpus * seconds
    lines = []
    for (team, tier), total in sorted(totals.items()):
        models = held.get((team, tier)) or {UNKNOWN_MODEL: 1.0}
        weight = sum(models.values())
        for model, part in sorted(models.items()):
            hours = total * part / weight / 3600.0
            price = prices.of(model) if prices else None
            lines.append(Line(team, tier, model, hours, price, None if price is None else hours * price))
    return lines


def as_table(lines: list[Line], currency: str = "") -> str:
    head = f"{'team':<20} {'tier':<11} {'GPU model':<12} {'GPU-hours':>12}"
    priced = any(line.cost is not None for line in lines)
    if priced:
        head += f" {'price/GPU-h':>12} {'cost ' + currency:>14}"
    out = [head]
    for line in lines:
        row = f"{line.team:<20} {line.tier:<11} {line.gpu_model:<12} {line.gpu_hours:>12.2f}"
        if priced:
            row += f" {line.price_per_gpu_hour or 0:>12.2f} {line.cost or 0:>14.2f}"
        out.append(row)
    total = sum(line.gpu_hours for line in lines)
    row = f"{'total':<20} {'':<11} {'':<12} {total:>12.2f}"
    if priced:
        row += f" {'':>12} {sum(line.cost or 0 for line in lines):>14.2f}"
    out.append(row)
    return "\n".join(out)


def as_csv(lines: list[Line]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for line in lines:
        writer.writerow(["" if v is None else v for v in asdict(line).values()])
    return buf.getvalue()


def as_json(lines: list[Line], start_s: float, end_s: float, currency: str = "") -> str:
    by_team: dict[str, float] = defaultdict(float)
    for line in lines:
        by_team[line.team] += line.gpu_hours
    doc = {
        "period_start": datetime.fromtimestamp(start_s, UTC).isoformat(),
        "period_end": datetime.fromtimestamp(end_s, UTC).isoformat(),
        "currency": currency,
        "lines": [asdict(line) for line in lines],
        "team_gpu_hours": dict(sorted(by_team.items())),
        "total_gpu_hours": sum(by_team.values()),
        "total_cost": sum(line.cost for line in lines if line.cost is not None) if lines else 0.0,
    }
    return json.dumps(doc, indent=2)


def write(lines: list[Line], path: Path, start_s: float, end_s: float, currency: str = "") -> None:
    """CSV or JSON by the file's extension."""
    text = as_json(lines, start_s, end_s, currency) if path.suffix.lower() == ".json" else as_csv(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
