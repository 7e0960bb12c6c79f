"""`gpufair trace export`, `gpufair report` and `gpufair whatif`: the ledger's history as a
trace, as a cost report, and replayed under a proposed policy (docs/whatif.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from scheduler.core import InvalidInput, PolicyConfig, load_policy
from simulator.cli import add_latency_arguments, latency_from_args

HISTORY_REVISION = "0004"


def _open(url: str):
    """The ledger, read as it is: a ledger without the gang history is a clear error."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from scheduler.ledger import Ledger, LedgerError
    from scheduler.ledger import migrate as migrations

    ledger = Ledger(url, migrate=False)
    revision = ledger.revision()
    script = ScriptDirectory.from_config(migrations.alembic_config())
    try:
        chain = {r.revision for r in script.iterate_revisions(revision, "base")} if revision else set()
    except CommandError:  # a revision this gpufair does not know (a newer one)
        chain = {HISTORY_REVISION}
    if HISTORY_REVISION not in chain:
        ledger.close()
        raise LedgerError(
            "ledger",
            "revision",
            f"is {revision or 'empty'}, without the gang history (schema {HISTORY_REVISION})",
            "run a gpufair daemon of this version on it once (it upgrades the schema), then export",
        )
    return ledger


def _export(args: argparse.Namespace) -> int:
    from scheduler.ledger.trace import export, history_trace, parse_instant

    since = parse_instant(args.since, "--since")
    until = parse_instant(args.until, "--until") if args.until else None
    with _open(args.ledger) as ledger:
        hist = history_trace(ledger, since, until)
    out, spec = export(hist, Path(args.out))
    print(f"{len(hist.trace.jobs):,} gangs -> {out}; cluster ({len(hist.nodes)} nodes) -> {spec}")
    if hist.left_out:
        print(f"  {len(hist.left_out):,} gangs left out (never started), e.g. {hist.left_out[0]}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from scheduler import costreport

    start, end = costreport.period_bounds_of(args.period)
    prices = None
    if args.prices:
        prices = costreport.load_prices(Path(args.prices).read_text(encoding="utf-8"), args.prices)
    with _open(args.ledger) as ledger:
        lines = costreport.cost_report(ledger, start, end, prices)
    currency = prices.currency if prices else ""
    print(costreport.as_table(lines, currency))
    for path in (args.csv, args.json):
        if path:
            costreport.write(lines, Path(path), start, end, currency)
            print(f"written: {path}")
    return 0


def _policy(path: str | None) -> PolicyConfig:
    return load_policy(Path(path).read_text(encoding="utf-8")) if path else PolicyConfig()


def _whatif(args: argparse.Namespace) -> int:
    from scheduler import whatif
    from scheduler.ledger.trace import history_trace, parse_instant
    from simulator.teams import teams_for_trace

    since = parse_instant(args.since, "--since")
    until = parse_instant(args.until, "--until") if args.until else None
    with _open(args.ledger) as ledger:
        hist = history_trace(ledger, since, until)
    if not hist.trace.jobs:
        raise InvalidInput(
            "whatif", "--since", "no gang of the ledger ran in that window", "give an earlier --since"
        )
    tenants = [j.team for j in hist.trace.jobs]
    live_teams = teams_for_trace(tenants, Path(args.live_teams) if args.live_teams else None, None)
    new_teams = teams_for_trace(tenants, Path(args.teams), None) if args.teams else live_teams
    live = whatif.Scenario(whatif.LIVE, _policy(args.live_policy_file), live_teams)
    proposed = whatif.Scenario(whatif.PROPOSED, _policy(args.policy_file), new_teams)
    print(f"replaying {len(hist.trace.jobs):,} gangs on {len(hist.nodes)} nodes, live and proposed")
    result = whatif.compare(hist, live, proposed, Path(args.out), latency_from_args(args, "whatif"))
    print("largest changes:" if result.changes else "no change worth a line")
    for line in result.changes:
        print(f"  {line}")
    print(f"report: {result.report}")
    return 0


def _guarded(name: str, fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (InvalidInput, OSError) as exc:
            print(f"gpufair {name}: {exc}", file=sys.stderr)
            return 2

    return run


def add_history_commands(sub: argparse._SubParsersAction) -> None:
    ledger_help = "ledger database: a SQLite path or a PostgreSQL URL"
    trace = sub.add_parser("trace", help="the ledger's gang history as a trace")
    tsub = trace.add_subparsers(dest="trace_command", required=True)
    exp = tsub.add_parser(
        "export", help="write the native trace (CSV or Parquet) and a ClusterSpec beside it"
    )
    exp.add_argument("--ledger", required=True, help=ledger_help)
    exp.add_argument("--since", required=True, help="first submission, a UTC date or date-time")
    exp.add_argument("--until", help="end of the window (default: the last accrual); runs are cut there")
    exp.add_argument("--out", required=True, help="trace file: .parquet/.pq for Parquet, else CSV")
    exp.set_defaults(func=_guarded("trace export", _export))

    rep = sub.add_parser("report", help="GPU-hours (and cost) per team, tier and GPU model for a period")
    rep.add_argument("--ledger", required=True, help=ledger_help)
    rep.add_argument("--period", required=True, help="a month (2026-11) or FROM..TO dates, UTC")
    rep.add_argument("--prices", help="YAML: currency, perGPUHour {MODEL: PRICE}, optional default")
    rep.add_argument("--csv", help="also write the lines as CSV")
    rep.add_argument("--json", help="also write the lines and totals as JSON")
    rep.set_defaults(func=_guarded("report", _report))

    wi = sub.add_parser("whatif", help="replay the ledger's history under the live and a proposed policy")
    wi.add_argument("--ledger", required=True, help=ledger_help)
    wi.add_argument("--since", required=True, help="first submission, a UTC date or date-time")
    wi.add_argument("--until", help="end of the window (default: the last accrual)")
    wi.add_argument("--policy-file", required=True, help="the proposed policy settings YAML")
    wi.add_argument("--teams", help="the proposed GPUTeam YAML (default: the live teams)")
    wi.add_argument("--live-policy-file", help="the policy the cluster runs (default: built-in defaults)")
    wi.add_argument(
        "--live-teams", help="the GPUTeam YAML the cluster runs (default: one team per gang team, weight 1)"
    )
    wi.add_argument("--out", default="whatif-out", help="folder for report.html and the summaries")
    add_latency_arguments(wi)
    wi.set_defaults(func=_guarded("whatif", _whatif))
