"""Tests of the API layer (app/): what a submission stores, and the caps, restarts and outages its clients meet."""
