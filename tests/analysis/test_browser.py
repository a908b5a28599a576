"""The report in a real browser: headless Chromium loads it, no image is broken, a screenshot is taken.

Skipped, with a message, when Chromium is not installed (``apt-get install chromium``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from analysis_synth import write_csv_study

from moelab.analysis.report import build_report

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
# After load, list the images that did not decode; the result lands in the DOM that --dump-dom prints.
CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                   .map(function (i) { return i.getAttribute('src'); });
  var out = document.createElement('pre');
  out.textContent = 'IMGCHECK=' + JSON.stringify({total: imgs.length, broken: broken});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium"):
        if path := shutil.which(name):
            return path
    return None


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120)


def _image_check(browser: str, profile: Path, page: Path) -> dict:
    proc = _run(browser, profile, "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    found = re.findall(r"IMGCHECK=(\{.*?\})</pre>", proc.stdout)
    assert found, f"the check script did not report (rc {proc.returncode}): {proc.stderr[-500:]}"
    return json.loads(found[-1])


def test_report_in_headless_chromium(tmp_path, failing_rows):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium not found: install the Debian package 'chromium' to run the browser check")
    study = write_csv_study(tmp_path / "study", failing_rows)
    index = build_report(study, n_boot=100)
    report = index.parent
    checked = report / "browser-check.html"  # beside index.html, so relative image paths resolve the same
    checked.write_text(index.read_text().replace("</body>", CHECK + "</body>"))
    result = _image_check(browser, tmp_path / "profile", checked)
    assert result["total"] >= 10 and result["broken"] == [], result

    # the check itself sees a broken image
    control = report / "broken-control.html"
    control.write_text(checked.read_text().replace("</body>", '<img src="no-such-figure.png"></body>'))
    assert _image_check(browser, tmp_path / "profile", control)["broken"] == ["no-such-figure.png"]

    shot = tmp_path / "report.png"
    proc = _run(browser, tmp_path / "profile", "--window-size=1280,4000", f"--screenshot={shot}", index.as_uri())
    assert shot.is_file(), proc.stderr[-500:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
