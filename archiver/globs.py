"""Path globs, one meaning everywhere a user writes one (policy ``path:`` conditions, ``restore``,
``ls``): ``*`` and ``?`` stay within one directory, ``**`` crosses directories."""

from __future__ import annotations

import fnmatch
import re


def is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def glob_regex(pattern: str, *, ignore_case: bool = True) -> re.Pattern:
    """Path glob: '**' spans directories, '*' and '?' stay inside one; a pattern without '/'
    matches the file name, a relative one matches anywhere in the path, one starting with '/'
    the whole absolute path. Policies match case-insensitively (when in doubt, a near match
    protects); restore and ls pass ``ignore_case=False`` (they act on exactly the files named)."""
    p = pattern.replace("\\", "/")
    anchored = p.startswith("/")
    out, i = [], 0
    while i < len(p):
        if p.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif p.startswith("**", i):
            out.append(".*")
            i += 2
        elif p[i] == "*":
            out.append("[^/]*")
            i += 1
        elif p[i] == "?":
            out.append("[^/]")
            i += 1
        elif p[i] == "[":
            j = p.find("]", i + 1)
            if j == -1:
                out.append(re.escape(p[i]))
                i += 1
            else:
                out.append(fnmatch.translate(p[i : j + 1])[4:-3])
                i = j + 1
        else:
            out.append(re.escape(p[i]))
            i += 1
    body = "".join(out)
    flags = re.IGNORECASE if ignore_case else 0
    if anchored:
        return re.compile("^" + body + "$", flags)
    return re.compile("(?:^|/)" + body + "$", flags)
