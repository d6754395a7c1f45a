"""The names of the evaluation profiles: what settings, the API and the CLI accept.

Each name is implemented by a sub-package of models/ (its profile in models/<name>/profile.py) and registered in
models.registry.REGISTRY (which checks it registers exactly these); the report's signature records the one used.
"""

PROFILES = ("lite", "paper")
DEFAULT_PROFILE = "lite"
# `--side-head none` / EMOPRES_SIDE_HEAD=none: no side-normalised SER reading (worker/engine/side_reading.py)
NO_SIDE_HEAD = "none"
