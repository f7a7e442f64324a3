"""`make test` says which tests a missing system package skips: the list must stay true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_make_test_names_every_module_that_needs_fashion_mnist():
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    listed = set(re.search(r"^FASHION_TESTS := (.*)$", makefile, re.M).group(1).split())
    needing = {
        path.name
        for path in (ROOT / "tests").glob("test_*.py")
        if re.search(
            r"^from conftest import .*\b(requires_fashion|fashion_available)\b",
            path.read_text(),
            re.M,
        )
    }
    assert listed == needing
