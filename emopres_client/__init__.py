"""The emopres client: what a CI runner needs to evaluate on an emopres service (httpx, nothing heavier).

* ``emopres_client.client``: the API v1 client (re-exporting the CI gates of ``emopres_client.gates``);
* ``emopres_client.cli``: `emopres submit` and `emopres jobs ...` (the light distribution's `emopres`
  command, and the same commands in the full one);
* ``emopres_client.webhooks``: signing and verifying job webhooks (a receiver imports ``verify``);
* ``emopres_client.pairs`` / ``safe_text``: the pairs file format and text rules the service shares.

Nothing here imports the service (app, worker, models, core): the light install has only this package.
"""

__version__ = "0.1.0"
