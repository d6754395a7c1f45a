"""Tests of core/ and the pairs file: audio, metrics against scipy/scikit-learn, bootstrap, catalogue."""
