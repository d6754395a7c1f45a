"""Tests of what an attacker or a fault does to the service: security, decode bombs, bad input, faults, fuzzing."""
