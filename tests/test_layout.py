"""The package's shape as a newcomer reads it: every registered unit is documented and offered
by the CLI, registries are leaves, every package has an ``__init__.py``, and the study
directory's names come from one module that imports nothing of the project but its errors."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from typer.testing import CliRunner

from transferscope import registry
from transferscope.cli import app
from transferscope.unitkit.unit import Analysis, ReportSection

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "src" / "transferscope"


def _imports(path: Path) -> set[str]:
    """Every transferscope module ``path`` imports, at any level of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("transferscope")}


def test_every_registered_unit_has_a_section_in_docs_methods() -> None:
    headings = re.findall(r"(?m)^## (\w+)", (ROOT / "docs" / "methods.md").read_text())
    missing = [name for name in registry.names() if name not in headings]
    assert missing == [], f"docs/methods.md has no '## <name>' section for {missing}"


def test_every_registered_unit_is_in_analyze_help_plug_ins_included() -> None:
    class Probe(Analysis, name="probe_in_help", section=ReportSection("probe", "Probe")):
        """A unit registered from outside the package."""

    with registry.registered(Probe):
        result = CliRunner().invoke(app, ["analyze", "--help"], terminal_width=400)
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        missing = [name for name in registry.names() if name not in text]
        assert missing == []
        assert "probe_in_help" in text
    assert "probe_in_help" not in registry.names()


def test_registries_import_none_of_their_members() -> None:
    for registry_file, members in (
        (PACKAGE / "registry.py", "transferscope.analyses"),
        (PACKAGE / "data" / "registry.py", "transferscope.data."),
        (PACKAGE / "models" / "registry.py", "transferscope.models.adapters"),
    ):
        imported = _imports(registry_file)
        own = {m for m in imported if m.startswith(members)}
        allowed = {"transferscope.data.base", "transferscope.data.registry"}
        assert own - allowed == set(), registry_file


def test_the_study_directory_names_import_nothing_of_the_project_but_errors() -> None:
    assert _imports(PACKAGE / "paths.py") <= {"transferscope.errors"}


def test_every_package_has_an_init() -> None:
    folders = [
        p
        for p in PACKAGE.rglob("*")
        if p.is_dir() and p.name != "__pycache__" and any(p.glob("*.py"))
    ]
    assert folders and [p for p in folders if not (p / "__init__.py").is_file()] == []
