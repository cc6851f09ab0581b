"""Shared test settings: Hypothesis profiles and float64 defaults.

Profiles (select with HYPOTHESIS_PROFILE=...): "ci" (default, sized so that `make test`
stays under 10 minutes on 2 cores), "dev" (fewer examples), "thorough" (many more).
"""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.register_profile("dev", parent=settings.get_profile("ci"), max_examples=10)
settings.register_profile(
    "thorough", parent=settings.get_profile("ci"), max_examples=1000, derandomize=False
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(1)  # tests run in parallel workers (pytest -n 2)
