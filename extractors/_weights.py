"""Moved to `pipeline.nn.weights` (backbones are built there); kept so existing imports still work."""
from pipeline.nn.weights import (  # noqa: F401
    download_failed,
    file_fingerprint,
    file_sha256,
    random_fingerprint,
    read_state_dict,
    seeded,
    weights_file,
)
