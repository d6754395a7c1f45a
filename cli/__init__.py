"""The `emopres` command line (one module per command group, sharing cli.engine_options) and the HTTP
client of `emopres submit` (cli.client). It sits above every other package: it may import app, worker,
models and core; nothing imports it."""
