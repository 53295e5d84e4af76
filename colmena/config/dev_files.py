"""Files `colmena dev` creates once and every later process reads: dev keys and the like.

A file is created by hard-linking a complete temporary file into place. Of two processes
starting at once one link wins and both read the same content; nobody reads a half-written
file, and an existing file is never replaced (replacing a key would orphan what it signed or
encrypted).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def create_once(path: Path, make_text: Callable[[], str]) -> tuple[str, bool]:
    """The text of `path`, written from `make_text()` (mode 0600) if it did not exist yet.

    Returns the text and whether this call created the file.
    """
    try:
        return path.read_text(encoding="ascii"), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".part")
    created = False
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(make_text())
        os.link(tmp, path)
        created = True
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_text(encoding="ascii"), created
