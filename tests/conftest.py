"""Settings for the whole suite."""

from __future__ import annotations

import os

from hypothesis import settings

# On CI the examples are the same on every run, so a red build can be rerun
# as it was; and a loaded machine must not fail a test on its clock alone.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
