"""archiver: storage-tier archival of image collections with a latent-diffusion codec."""

import os as _os

# onnxruntime (the text detector's runtime) would otherwise write a telemetry device id and an
# event database under ~/.cache/Microsoft on import and try to upload events: an offline archival
# tool writes only under the state, config and cache directories it documents (docs/operations.md).
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
