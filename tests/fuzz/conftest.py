"""The fuzz harness's shared settings: one hypothesis profile, ``alignts-fuzz``, for every target here.

CI runs a short budget (200 examples per target); ``scripts/fuzz`` runs a long one through the environment
variable ALIGNTS_FUZZ_EXAMPLES (examples per target). The profile is registered, not loaded, so the property
tests elsewhere in the suite keep their own settings; a target takes it with

    @settings.get_profile("alignts-fuzz")        # or settings(settings.get_profile("alignts-fuzz"), ...)

A target whose examples are expensive (a subprocess each) may run a stated fraction of the budget.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("ALIGNTS_FUZZ_EXAMPLES", "200"))

settings.register_profile(
    "alignts-fuzz",
    max_examples=EXAMPLES,
    deadline=None,  # a shared 2-core machine: timings are noise, not findings
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture],
    print_blob=True,
)
