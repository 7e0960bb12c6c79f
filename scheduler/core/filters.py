"""Node filters: which nodes a gang's pods may use at all (kube-scheduler's Filter point)."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from scheduler.core.cluster import ClusterState
from scheduler.core.framework import NodeFilter
from scheduler.core.model import Gang


class GpuModel(NodeFilter):
    """Only nodes whose GPU model the gang allows (`gpu_models`; empty: any model)."""

    name = "gpu-model"

    def signature(self, gang: Gang) -> Hashable:
        return gang.gpu_models

    def mask(self, state: ClusterState, gang: Gang) -> np.ndarray | None:
        return state.model_mask(gang.gpu_models)


NODE_FILTERS: dict[str, NodeFilter] = {GpuModel.name: GpuModel()}
