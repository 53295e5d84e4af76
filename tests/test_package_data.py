"""Every file colmena reads from its own package at run time is shipped in the wheel.

The image (`ops/Dockerfile`) installs colmena with pip, so a file the package-data patterns in
pyproject.toml miss exists in a checkout and in the tests, and is missing in production (the
console's stylesheet once was: the ingress could not start in the stack).
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_data_file_of_the_package_matches_a_package_data_pattern() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["*"]
    data_files = [
        path
        for path in (ROOT / "colmena").rglob("*")
        if path.is_file() and path.suffix != ".py" and "__pycache__" not in path.parts
    ]
    assert data_files, "the package has data files (templates, migrations, static files)"
    missed = [
        str(path.relative_to(ROOT))
        for path in data_files
        if not any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)
    ]
    assert missed == []
