"""Tests of the model backends on tiny random-weight checkpoints, SER head training, speed-ups, threads."""
