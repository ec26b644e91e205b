"""Error sentences stored for users never show where the server keeps files.

Library exceptions quote absolute paths (the data dir, the artifact store,
temporary folders). A user needs the file's name at most, never the layout of
the server's disk, so each absolute POSIX path becomes its last component."""

from __future__ import annotations

import re

# Characters that end a path inside a sentence: blanks, quotes, brackets, separators.
_STOP = r"\s'\"`,;()\[\]{}<>|"
# An absolute path of at least two components. The look-behind keeps URLs
# (scheme://host/path), ratios (1/2/3) and relative paths (a/b/c) as they are.
_ABSOLUTE = re.compile(rf"(?<![\w.~:/\\-])/[^{_STOP}/]+(?:/[^{_STOP}/]*)+")
_FILE_URL = re.compile(rf"\bfile://(/[^{_STOP}]*)")
NEUTRAL = "a server folder"


def _replace(match: re.Match[str]) -> str:
    path = match.group(0)
    bare = path.rstrip(".:")  # sentence punctuation after a path stays in the sentence
    name = bare.rsplit("/", 1)[-1]
    return (name or NEUTRAL) + path[len(bare) :]


def redact_paths(text: str) -> str:
    """`text` with every absolute path replaced by its file name, or by a
    neutral word when it names a folder with a trailing slash."""
    return _ABSOLUTE.sub(_replace, _FILE_URL.sub(lambda m: m.group(1), text))
