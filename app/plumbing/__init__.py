"""HTTP plumbing of the gateway: typed dependencies, errors and their handlers, middleware, connection limits,
Prometheus metrics.
"""
