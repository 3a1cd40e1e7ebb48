"""The repository around the benchmark, importable: the benchmark starts its servers with the
test suite's process helpers, the package tests/processes/, imported as `tests.processes`.

`python bench/run.py` puts bench/ on sys.path, not the repository's root; importing this
module adds the root (at the end: what is installed keeps precedence), so `tests` is
found as the directory it is. It is the benchmark's only change to sys.path for the
repository; hub/ and publisher/ come from the installed (editable) package.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
