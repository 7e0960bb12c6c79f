"""gpufair's Prometheus metrics, dashboards and alert rules; names live in `names`."""

from scheduler.core.teamtree import entitled_shares
from scheduler.metrics.fairness import ClusterView, cluster_view, fragmented_gpus, jain_index
from scheduler.metrics.live import SchedulerMetrics, exposition

__all__ = [
    "ClusterView",
    "SchedulerMetrics",
    "cluster_view",
    "entitled_shares",
    "exposition",
    "fragmented_gpus",
    "jain_index",
]
