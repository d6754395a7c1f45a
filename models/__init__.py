"""Model backends, one sub-package per family: the Profile interface (profile), the profiles (registry),
lite and paper backends, prosody, SER heads and their training, runtime helpers; artifacts/ holds the shipped heads."""

from pathlib import Path

#: the shipped artifacts (SER heads, eGeMAPS LLD statistics), packaged with models/
ARTIFACTS_DIR = Path(__file__).parent / "artifacts"
