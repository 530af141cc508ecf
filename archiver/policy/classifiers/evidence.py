"""Evidence markers: signs that a file is (or may become) evidence and must stay untouched.

Only path, tags and EXIF header fields are read, never pixels, so it costs nothing. Markers:
- a directory in the path named like evidence/forensic/legal-hold/case files;
- a catalog tag such as ``legal-hold``;
- EXIF naming forensic software (acquisition / analysis suites) or evidence cameras (body-worn,
  dash, forensic cameras).
"""

from __future__ import annotations

import re

from . import ClassifierResult

EVIDENCE_TAGS = frozenset({"legal-hold", "legal_hold", "legalhold", "litigation-hold", "evidence", "forensic", "do-not-alter"})

#: a path component that marks evidence (case-insensitive, whole component or prefix)
PATH_RE = re.compile(
    r"(^|[/\\])(evidence|evidences|forensics?|legal[-_ ]?hold|litigation([-_ ]?hold)?|chain[-_ ]of[-_ ]custody|case[-_ ]?\d+)([/\\]|[-_ .]|$)",
    re.IGNORECASE,
)

#: EXIF text that names forensic software or evidence-grade cameras
EXIF_RE = re.compile(
    r"\b(ftk|forensic|encase|cellebrite|magnet\s*axiom|axiom|x-ways|autopsy|amped|oxygen forensic|"
    r"msab|xry|griffeye|evidence|body[- ]?(worn|cam)|axon|watchguard|dash\s*cam|crime\s*scene)\b",
    re.IGNORECASE,
)
EXIF_FIELDS = ("Software", "Make", "Model", "ImageDescription", "Artist", "UserComment", "HostComputer", "ProcessingSoftware")


def classify(subject) -> ClassifierResult:
    markers: list[str] = []
    tags = sorted(t for t in subject.tags if t in EVIDENCE_TAGS)
    if tags:
        markers.append(f"tag {', '.join(tags)}")
    m = PATH_RE.search(subject.posix_path)
    if m:
        markers.append(f"path component '{m.group(2)}'")
    exif = subject.exif
    for f in EXIF_FIELDS:
        v = exif.get(f)
        if isinstance(v, str) and EXIF_RE.search(v):
            markers.append(f"EXIF {f} '{v[:60]}'")
    found = bool(markers)
    return ClassifierResult(
        name="evidence",
        score=1.0 if found else 0.0,
        found=found,
        reason=("evidence markers: " + "; ".join(markers)) if found else "no evidence markers (path, tags, EXIF)",
        details={"markers": markers, "count": len(markers)},
    )
