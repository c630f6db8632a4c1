"""docs/reliability.md lists every dynamic provider class of infra/ with what is tested for it (issue 28):
a new provider without its row fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_BASES = {"ResourceProvider", "ChampionGateProvider"}


def dynamic_provider_classes() -> set[str]:
    """Every class in infra/ that is a dynamic provider (directly, or through the shared gate provider)."""
    found = set()
    for path in (ROOT / "infra").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if bases & PROVIDER_BASES:
                    found.add(node.name)
    return found - {"ChampionGateProvider"}  # the shared base: its subclasses have the rows


def documented_classes() -> dict[str, list[str]]:
    """Provider class -> its four cells, from the table of docs/reliability.md."""
    rows = {}
    for line in (ROOT / "docs" / "reliability.md").read_text().splitlines():
        match = re.match(r"^\| `(\w+Provider)` [^|]*\|(.*)\|\s*$", line)
        if match:
            rows[match[1]] = [cell.strip() for cell in match[2].split("|")]
    return rows


def test_every_dynamic_provider_class_has_a_row_in_docs_reliability() -> None:
    classes = dynamic_provider_classes()
    assert len(classes) >= 20  # the finder finds the providers (5 local, 6 gcp, 8 ibm, 3 aws today)
    assert sorted(classes - set(documented_classes())) == []


def test_every_row_fills_its_four_columns() -> None:
    for name, cells in documented_classes().items():
        assert len(cells) == 4 and all(cells), name
