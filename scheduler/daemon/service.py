"""Wiring the daemon's parts together from its configuration."""

from __future__ import annotations

from http.server import ThreadingHTTPServer

from scheduler.daemon.config import DaemonConfig
from scheduler.daemon.daemon import Daemon
from scheduler.daemon.hooks import DaemonHooks, TelemetryThread
from scheduler.daemon.http import serve
from scheduler.daemon.kube import Kube, api_client_from


def build_daemon(cfg: DaemonConfig) -> tuple[Daemon, ThreadingHTTPServer]:
    if cfg.ledger_url:
        from scheduler.ledger.store import database_url

        database_url(cfg.ledger_url)  # a malformed URL fails at start, not in every cycle
    # Explanations use a client of their own, as kube-scheduler's event recorder does, so
    # their rate limit never slows a bind.
    kube = Kube(api_client_from(cfg.kubeconfig), cfg.qps, cfg.burst)
    explain_kube = Kube(api_client_from(cfg.kubeconfig), cfg.qps, cfg.burst)
    telemetry = None
    if cfg.mqtt_broker:
        telemetry = TelemetryThread(
            cfg.mqtt_broker, cfg.mqtt_ca, cfg.mqtt_cert, cfg.mqtt_key, cfg.telemetry_stale_s
        )
    hooks = DaemonHooks(cfg.policy, cfg.ledger_url, telemetry=telemetry, accrue_every_s=cfg.accrue_every_s)
    daemon = Daemon(cfg, kube, explain_kube, hooks)
    hooks.pod_lookup = daemon.cache["pods"].get
    server = serve(cfg.listen, daemon.healthy, lambda: daemon.ready, hooks.metrics.exposition)
    return daemon, server
