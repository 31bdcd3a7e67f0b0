"""Test configuration: hypothesis runs without per-example deadlines (a first call
into torch can be slow on a busy CI machine) and derandomized on CI, so that a red
run is reproducible."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
