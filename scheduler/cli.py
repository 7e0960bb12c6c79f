"""The `gpufair` command. Subcommands for the daemon and the simulator arrive with their issues."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scheduler import __version__
from scheduler.core import InvalidInput, PolicyConfig, load_policy, load_teams
from scheduler.core.teamtree import display_order


def _validate(args: argparse.Namespace) -> int:
    """Check GPUTeam and policy files the way the scheduler will read them."""
    ok = True
    if args.policy:
        try:
            policy = load_policy(Path(args.policy).read_text())
            print(
                f"{args.policy}: policy ok (production >= {policy.production_min_priority}, "
                f"half-life {policy.usage_half_life_s / 86400:g}d, "
                f"levels {', '.join(policy.topology_levels)})"
            )
        except (InvalidInput, OSError) as exc:
            print(f"{args.policy}: {exc}", file=sys.stderr)
            ok = False
    else:
        policy = PolicyConfig()
    if args.teams:
        try:
            teams = load_teams(Path(args.teams).read_text())
        except (InvalidInput, OSError) as exc:
            print(f"{args.teams}: {exc}", file=sys.stderr)
            return 1
        groups = {t.parent for t in teams if t.parent is not None}
        tree = f", {len(groups)} group(s)" if groups else ""
        print(f"{args.teams}: {len(teams)} team(s) ok{tree}")
        by_name = {t.name: t for t in teams}
        for name, depth in display_order({t.name: t.parent for t in teams}):
            t = by_name[name]
            budget = "no budget"
            if t.budget:
                period = t.budget.period
                if period == "duration":
                    period = f"{t.budget.period_seconds:g}s"
                budget = f"{t.budget.gpu_hours:g} GPU-h/{period} ({t.budget.on_exhausted.value})"
            cap = f"max {t.max_gpus:g}" if t.max_gpus is not None else "no cap"
            label = "  " * depth + t.name + ("/" if t.name in groups else "")
            print(
                f"  {label:<16} weight {t.weight:<5g} floor {t.guaranteed_gpus:<5g} {cap:<9} "
                f"{budget}; namespaces {', '.join(t.namespaces) or '-'}"
            )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpufair", description="GPU fair-share scheduler for Kubernetes")
    parser.add_argument("--version", action="version", version=f"gpufair {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="check GPUTeam and policy YAML files")
    check.add_argument("--teams", help="multi-document YAML of GPUTeam objects")
    check.add_argument("--policy", help="policy YAML document")
    check.set_defaults(func=_validate)
    sim = sub.add_parser("simulate", help="replay a job trace under one or more policies")
    from simulator.cli import add_arguments, run

    add_arguments(sim)
    sim.set_defaults(func=run)
    agent = sub.add_parser("agent", help="run the GPU node agent (NVML telemetry over MQTT)")
    from scheduler.agent.cli import add_arguments as add_agent_arguments
    from scheduler.agent.cli import run as run_agent

    add_agent_arguments(agent)
    agent.set_defaults(func=run_agent)
    from scheduler.devcluster import cli as dev_cluster

    dev = sub.add_parser("dev-cluster", help="a local Kubernetes control plane with fake GPU nodes (KWOK)")
    dev_cluster.add_arguments(dev)
    from scheduler.daemon.cli import add_daemon_commands

    add_daemon_commands(sub)
    from scheduler.historycli import add_history_commands

    add_history_commands(sub)
    args = parser.parse_args(argv)
    if args.command == "validate" and not (args.teams or args.policy):
        parser.error("validate needs --teams and/or --policy")
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
