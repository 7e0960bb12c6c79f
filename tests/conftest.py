"""Hypothesis profiles: 'ci' (default) keeps the suite quick; 'deep' hunts harder.

HYPOTHESIS_PROFILE=deep pytest tests/test_properties.py
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "deep", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Fixtures that start real services on loopback, one module per service family.
pytest_plugins = [
    "tests.fixtures_kube",
    "tests.fixtures_services",
    "tests.fixtures_mqtt",
    "tests.fixtures_workloads",
]
