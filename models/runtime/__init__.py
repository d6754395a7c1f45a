"""Runtime helpers of the model backends: batching, precision (fast mode), packed kernels, weight locks, thread
pools.
"""
