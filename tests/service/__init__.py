"""Tests of the service as users run it: the API, processes, webhooks, reports over HTTP, the clients."""
