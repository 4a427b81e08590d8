"""Hypothesis profiles for the protocol fuzz tests; import this module before ``given``.

* ``ci`` (the default): 200 examples per property, so the fuzz tests in tests/protocol
  take seconds, as every test run can afford.
* ``release``: 20,000 examples per property, about a hundred times longer; run before
  a release with ``HYPOTHESIS_PROFILE=release pytest tests/protocol -k fuzz``.

No deadline: the machine running the suite may be loaded, and a slow example is not a
wrong one. No example database: nothing is written into the working tree; a failure
prints the example (and ``@reproduce_failure``) to replay it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

for _name, _examples in (("ci", 200), ("release", 20_000)):
    settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
