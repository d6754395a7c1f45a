"""Tests of paper research: reproducing the paper on MELD-ST (reproduce) and the validity protocol (validate)."""
