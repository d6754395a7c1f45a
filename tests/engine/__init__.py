"""Tests of the evaluation engine, its reports and their rendering, validate and reproduce."""
