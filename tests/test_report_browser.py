"""The report in a real browser: headless Chromium, offline, no console errors, every figure loads.

Skipped when /usr/bin/chromium is absent (``apt-get install chromium``). Chromium runs with a fresh
profile and every network path closed (no proxy reachable, every host unresolvable), so a page
that needed the network would show broken images or errors here.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from test_report import make_study
from transferscope import registry
from transferscope.report import build_report

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed")

# Runs first in <head>: records every error (script errors and failed resource loads, which only
# a capturing listener sees), then after load writes the result into the DOM for --dump-dom.
CHECK = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  window.__errors.push(t && t.src ? "failed to load " + t.src : String(e.message));
}, true);
var origError = console.error;
console.error = function () { window.__errors.push(Array.from(arguments).join(" ")); };
window.addEventListener("load", function () {
  var imgs = Array.from(document.images);
  var result = {
    images: imgs.length,
    loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    broken: imgs.filter(function (i) { return !(i.naturalWidth > 0); }).map(function (i) { return i.src; }),
    errors: window.__errors,
    findings: document.querySelectorAll("#findings-table tbody tr").length,
    gridRows: document.querySelectorAll("#verdict-grid tbody tr").length,
    gridBottom: document.getElementById("verdict-grid").getBoundingClientRect().bottom,
    gridRight: document.getElementById("verdict-grid").getBoundingClientRect().right
  };
  var pre = document.createElement("pre");
  pre.id = "ts-check";
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});
</script>"""

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    # No network: an unreachable proxy and no host name resolves.
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr",
    "--v=0",
]


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _console_errors(stderr: str) -> list[str]:
    """Console messages Chromium logged for the page (its own dbus noise is not from the page)."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_study(tmp_path_factory.mktemp("browser") / "study")
    return build_report(root, formats=("png",))


def test_report_renders_offline_with_all_figures(
    report: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    text = report.read_text()
    # Same folder as the report, so the figures' relative paths resolve the same way.
    check_page = report.with_name("_browser_check.html")
    check_page.write_text(text.replace("<head>", "<head>" + CHECK, 1))
    profile = tmp_path_factory.mktemp("profile")
    proc = _chromium(
        profile,
        "--window-size=1280,720",
        "--virtual-time-budget=10000",
        "--dump-dom",
        check_page.as_uri(),
    )
    match = re.search(r'<pre id="ts-check">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"no check result; stderr:\n{proc.stderr[-2000:]}"
    result = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    expected = len(re.findall(r"<img ", text))
    assert result["images"] == expected > 0
    assert result["broken"] == []
    assert result["loaded"] == expected
    assert result["errors"] == []
    assert result["findings"] == sum(len(u.claims) for u in registry.units())
    # The verdict grid, a row per claim, fits the first screen of a 1280 x 720 window.
    assert result["gridRows"] == result["findings"]
    assert result["gridBottom"] <= 720 and result["gridRight"] <= 1280, result
    assert _console_errors(proc.stderr) == []


def test_report_screenshot(report: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A screenshot of the page itself (no check script), kept as a test artifact."""
    out = tmp_path_factory.mktemp("artifacts") / "report.png"
    proc = _chromium(
        tmp_path_factory.mktemp("profile"),
        "--window-size=1280,6000",
        "--virtual-time-budget=10000",
        f"--screenshot={out}",
        report.as_uri(),
    )
    assert out.is_file() and out.stat().st_size > 10_000, proc.stderr[-2000:]
    assert _console_errors(proc.stderr) == []
    print(f"report screenshot: {out}")
