"""Tests of the clients: the light client (emopres submit, jobs) in a fresh venv, and the HTTP client and gates."""
