"""Shared fixtures. Tests never download: real data comes from Debian's Fashion-MNIST package
(`make test` installs it when it can, or says how) and scikit-learn's bundled digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from transferscope.data import fashion_mnist


def fashion_available() -> bool:
    try:
        fashion_mnist.locate(download=False)
    except Exception:
        return False
    return True


requires_fashion = pytest.mark.skipif(
    not fashion_available(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (tiny models: more threads only wait for busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------
# The order test modules start in: the longest first.
#
# `make test` gives whole modules to its test processes (--dist loadfile, so a module's trained
# study is built once), in the order collected. Started last, a four-minute module leaves one
# process running it alone at the end; started first, the short ones fill in around it. The
# seconds per module come from a run (`pytest --record-module-seconds` writes the modules it ran
# into the file); a module missing from it counts as 0 (starts last). The order changes no result.

MODULE_SECONDS = Path(__file__).with_name("module_seconds.json")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-module-seconds",
        action="store_true",
        help=f"write each test module's total seconds to {MODULE_SECONDS.name} (the order "
        "modules start in: longest first)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seconds = json.loads(MODULE_SECONDS.read_text()) if MODULE_SECONDS.is_file() else {}
    # A stable sort: tests keep their order within a module, and modules with the same time
    # theirs.
    items.sort(key=lambda item: -float(seconds.get(item.path.name, 0.0)))


class _ModuleClock:
    """Sums the setup, call and teardown seconds of every test report, per module."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = Path(report.nodeid.split("::", 1)[0]).name
        self.seconds[name] = self.seconds.get(name, 0.0) + report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.seconds:
            return
        # A run of some modules updates theirs and keeps the others' (dropped, they would start
        # last).
        known = json.loads(MODULE_SECONDS.read_text()) if MODULE_SECONDS.is_file() else {}
        known.update({k: round(v, 1) for k, v in self.seconds.items()})
        MODULE_SECONDS.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    # In the controlling process only: under xdist it receives every worker's reports.
    if config.getoption("--record-module-seconds") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_ModuleClock(), "module-clock")
