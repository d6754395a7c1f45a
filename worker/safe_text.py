"""Text and JSON checked at the door: the rules live in emopres_client.safe_text, beside the pairs file
format that uses them (the light client reads manifests with the same rules as the service)."""
from emopres_client.safe_text import (MAX_FIELD_CHARS, MAX_JSON_DEPTH, MAX_PATH_CHARS, UnsafeText,  # noqa: F401
                                      check_json, check_text, loads_checked)
