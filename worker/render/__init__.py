"""Rendering for people: plots, the self-contained HTML report, the uncertainty-rescaled figure."""
