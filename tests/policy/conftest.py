"""The policy tests import the pack's rules as `policy.rules` (never `policy/__main__.py`, whose
PolicyPack constructor serves gRPC forever), so the repository root must be importable."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
