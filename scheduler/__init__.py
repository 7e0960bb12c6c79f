"""gpufair: a GPU fair-share scheduler for Kubernetes.

The decision core lives in :mod:`scheduler.core`; the daemon, ledger, metrics and node
agent are shells around it and arrive with their own issues.
"""

__version__ = "0.1.0"
