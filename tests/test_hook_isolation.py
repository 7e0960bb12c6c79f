"""One broken part of the daemon's after-cycle bookkeeping never stops the others: a hook
that raises is logged and counted, and metrics, the ledger and telemetry health go on.
Jain's index stays a number however small a team's entitlement is."""

from __future__ import annotations

import logging
from fractions import Fraction
from types import SimpleNamespace

import pytest

from scheduler.core import Team, decide
from scheduler.core.config import PolicyConfig
from scheduler.daemon.hooks import DaemonHooks
from scheduler.daemon.translate import Translation
from scheduler.metrics import SchedulerMetrics, jain_index
from scheduler.metrics import names as n
from scheduler.telemetry import TelemetryState
from tests.builders import gang, nodes, running, snapshot

# ---------------------------------------------------------------- jain_index


def _exact(allocated: dict, entitled: dict) -> float:
    xs = [Fraction(allocated.get(t, 0.0)) / Fraction(e) for t, e in entitled.items()]
    return float(sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs)))


@pytest.mark.parametrize(
    ("allocated", "demand"),
    [
        ({"a": 1.0, "b": 8.0}, {"a": 1e-200, "b": 16.0}),  # x_a = 1e200: its square overflows
        ({"a": 1.0, "b": 8.0}, {"a": 1e-310, "b": 16.0}),  # x_a itself is infinite in floats
        ({"a": 1e-200, "b": 1e-200}, {"a": 8.0, "b": 8.0}),  # the squares underflow to 0
    ],
)
def test_jain_index_is_a_number_for_extreme_entitlements(allocated: dict, demand: dict):
    # Entitlements equal demand here (16 healthy GPUs cover all of it).
    j = jain_index(allocated, demand, 32.0, {})
    assert j is not None and 0.5 <= j <= 1.0
    assert j == pytest.approx(_exact(allocated, demand), rel=1e-12)


def test_jain_index_of_ordinary_numbers_is_unchanged():
    assert jain_index({"a": 4.0, "b": 8.0}, {"a": 8.0, "b": 8.0}, 16.0, {}) == (1.5**2) / (2 * 1.25)
    assert jain_index({"a": 0.0}, {"a": 4.0}, 16.0, {}) is None


# ---------------------------------------------------------------- DaemonHooks


def _cycle():
    team = Team("vision", namespaces=("vision",))
    g = running(gang("vision/train", "vision", gpus=8), "n00", started=3600.0)
    snap = snapshot(nodes(2), (team,), [g])
    return Translation(snap, {}, {}), decide(snap, PolicyConfig())


def _failures(metrics: SchedulerMetrics, hook: str) -> float:
    return metrics.registry.get_sample_value(n.HOOK_FAILURES.sample, {"hook": hook}) or 0.0


def test_a_raising_metrics_hook_leaves_the_ledger_and_telemetry_running(tmp_path, monkeypatch, caplog):
    state = TelemetryState(stale_after_s=60.0)
    hooks = DaemonHooks(
        PolicyConfig(),
        str(tmp_path / "ledger.sqlite"),
        telemetry=SimpleNamespace(state=state, stop=lambda: None),
    )
    telemetry_seen: list[int] = []
    monkeypatch.setattr(hooks.metrics, "observe_telemetry", lambda stale, *_: telemetry_seen.append(stale))

    def broken(*_args, **_kw):
        raise OverflowError("numerical result out of range")

    monkeypatch.setattr(hooks.metrics, "observe_cycle", broken)
    tr, decisions = _cycle()
    try:
        with caplog.at_level(logging.ERROR, logger="gpufair.hooks"):
            hooks.cycle_done(tr, decisions, 0.01)
            hooks.cycle_done(tr, decisions, 0.01)
        # The ledger charged the running gang (8 GPUs for the hour it has run) ...
        assert hooks.ledger is not None
        assert hooks.ledger.period_usage(tr.snapshot.now_s, "vision") == {"training": pytest.approx(8.0)}
        # ... telemetry health ran both times ...
        assert telemetry_seen == [0, 0]
        # ... and the failure is counted each time, logged once (it would fail every cycle).
        assert hooks.failures["metrics"] == 2 and _failures(hooks.metrics, "metrics") == 2
        logged = [r for r in caplog.records if "hook metrics failed" in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None
    finally:
        hooks.close()


def test_a_raising_ledger_leaves_the_metrics_running(monkeypatch):
    hooks = DaemonHooks(PolicyConfig(), "sqlite://")

    def unreachable(*_args, **_kw):
        raise ConnectionError("database is down")

    monkeypatch.setattr(hooks, "accrue", unreachable)
    monkeypatch.setattr(hooks, "_record_evictions", unreachable)
    tr, decisions = _cycle()
    try:
        hooks.cycle_done(tr, decisions, 0.25)
        hooks.evicted([], tr.snapshot.now_s)
        hooks.acted("bind", [SimpleNamespace(result="ok")])
        registry = hooks.metrics.registry
        assert registry.get_sample_value(n.CYCLE_DURATION.name + "_count") == 1
        assert registry.get_sample_value(n.ALLOCATED_GPUS.name) == 8
        assert registry.get_sample_value(n.BINDS.sample, {"result": "ok"}) == 1
        assert hooks.failures == {"ledger": 1, "ledger_evictions": 1}
        assert _failures(hooks.metrics, "ledger") == 1
    finally:
        hooks.close()
