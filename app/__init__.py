"""The FastAPI gateway: the app factory (main), what a running gateway holds (services), jobs, tokens,
readiness; routes, HTTP plumbing, job intake and webhooks in sub-packages."""

from core import __version__

__all__ = ["__version__"]
