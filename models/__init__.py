"""Model backends, one sub-package per family: the Profile interface (profile), the profiles (registry),
lite and paper backends, prosody, SER heads and their training, runtime helpers; artifacts/ holds the shipped heads."""
