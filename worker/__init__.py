"""The worker layer: the evaluation engine, rendering for people, the queue runtime, paper research."""
