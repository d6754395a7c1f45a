"""The pairs file of `emopres evaluate` and of job uploads: it lives in emopres_client.pairs, the bottom
layer shared with the light client (which reads the same file to know what to upload)."""
from emopres_client.pairs import (REQUIRED_COLUMNS, ManifestError, PairSpec, check_relative_path,  # noqa: F401
                                  parse_pairs, read_pairs_file)
