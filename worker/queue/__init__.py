"""The queue runtime: chunk and finalize tasks, the Celery app, the embedded in-process queue, the reconciler."""
