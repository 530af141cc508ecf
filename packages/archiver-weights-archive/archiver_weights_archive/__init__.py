"""Earlier releases of archiver's embedded ``tiny`` weights, one folder each under ``releases/``
(``tiny.json`` + ``tiny.safetensors``, as shipped then).

Data only: the runtime package ``archiver`` carries just the current release and finds these by
digest (``archiver.codecs.diffusion.backbones.tiny.find_release``) when a ``.dlc`` file names one
of them, so that files written before an upgrade still decode to the very same pixels.
"""

from pathlib import Path

#: one folder per earlier release, named by its date and release number
RELEASES_DIR = Path(__file__).resolve().parent / "releases"
