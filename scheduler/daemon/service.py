"""Wiring the daemon's parts together from its configuration."""

from __future__ import annotations

from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest

from scheduler.daemon.config import DaemonConfig
from scheduler.daemon.daemon import Daemon
from scheduler.daemon.http import serve
from scheduler.daemon.kube import Kube, api_client_from


def build_daemon(cfg: DaemonConfig) -> tuple[Daemon, ThreadingHTTPServer]:
    # Explanations use a client of their own, as kube-scheduler's event recorder does, so
    # their rate limit never slows a bind.
    kube = Kube(api_client_from(cfg.kubeconfig), cfg.qps, cfg.burst)
    explain_kube = Kube(api_client_from(cfg.kubeconfig), cfg.qps, cfg.burst)
    registry = CollectorRegistry()
    daemon = Daemon(cfg, kube, explain_kube)
    server = serve(cfg.listen, daemon.healthy, lambda: daemon.ready, lambda: generate_latest(registry))
    return daemon, server
