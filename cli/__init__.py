"""The `emopres` command line: one module per command group, sharing cli.engine_options. The client
commands (`submit`, `jobs`) come from the light emopres_client package. It sits above every other
package: it may import app, worker, models, core and emopres_client; nothing imports it."""
