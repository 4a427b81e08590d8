"""Hypothesis settings for the property tests: a bounded run in CI, a long one for a release.

Import this module from a property-test module (``from tests import hypothesis_profiles``);
importing it registers the profiles and loads the one ``HYPOTHESIS_PROFILE`` names:

* ``ci`` (the default): about 200 examples per test, so the suite stays quick.
* ``release``: about 20,000 examples per test, run before a release
  (``HYPOTHESIS_PROFILE=release .venv/bin/pytest tests/control -k propert``).

Neither has a deadline: the machine is shared with brokers and other runs, and a slow
example is not a failure. Every test that draws many examples keeps each one cheap.
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, settings

PROFILES: Final = {"ci": 200, "release": 20_000}
#: The profile in force (``HYPOTHESIS_PROFILE``; ``ci`` when unset).
PROFILE: Final = os.environ.get("HYPOTHESIS_PROFILE", "ci")

for _name, _examples in PROFILES.items():
    settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )

if PROFILE not in PROFILES:
    raise RuntimeError(
        f"HYPOTHESIS_PROFILE={PROFILE!r} is not a profile: use one of {', '.join(PROFILES)}"
    )
settings.load_profile(PROFILE)


def examples(share: float) -> int:
    """``share`` of the profile's example count (at least 1), for a test whose examples
    are costly (each builds a router), so that it scales with the profile."""
    return max(1, round(PROFILES[PROFILE] * share))
