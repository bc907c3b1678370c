#!/usr/bin/env python3
"""Open RUN_DIR/report.html in headless Chromium: take a screenshot and check that every <img>
decoded (naturalWidth > 0) and that the page refers to nothing outside itself.

usage: check_report_browser.py RUN_DIR [--screenshot PATH] [--chromium PATH]
Exit status 0 when all checks pass, 1 when one fails, 2 when Chromium is missing or fails to run.
Standard library only, so it runs without the package installed.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Appended to a copy of the report: after the load event (all images decoded or failed), it writes
# what it found into the DOM, which --dump-dom then prints.
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var result = {images: imgs.length,
                widths: imgs.map(function (i) { return i.naturalWidth; }),
                broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                            .map(function (i) { return i.alt || i.src.slice(0, 60); })};
  var out = document.createElement('pre');
  out.id = 'higgs-lora-img-check';
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""
RESULT = re.compile(r'<pre id="higgs-lora-img-check">(.*?)</pre>', re.S)
# Any src/href that is not an embedded data URI or an in-page anchor would be fetched from elsewhere.
EXTERNAL = re.compile(r"""\b(?:src|href)\s*=\s*["']?(?!data:|#)([^"'\s>]+)""", re.I)


def chromium_flags(profile: str) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}"]


def run_chromium(binary: str, args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([binary, *chromium_flags(profile), *args], capture_output=True, text=True,
                              timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--screenshot", type=Path, help="where to write the PNG (default RUN_DIR/report_screenshot.png)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)

    report = args.run_dir / "report.html"
    if not report.is_file():
        print(f"{report}: not found (run `higgs-lora report {args.run_dir}` first)", file=sys.stderr)
        return 1
    binary = shutil.which(args.chromium)
    if binary is None:
        print(f"{args.chromium}: Chromium not found (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    text = report.read_text(encoding="utf-8")
    failures = []

    external = EXTERNAL.findall(text)
    if external:
        failures.append(f"refers to outside resources: {external[:5]}")

    screenshot = (args.screenshot or args.run_dir / "report_screenshot.png").resolve()
    done = run_chromium(binary, [f"--screenshot={screenshot}", "--window-size=1200,3000", report.resolve().as_uri()])
    if done.returncode != 0 or not screenshot.is_file() or screenshot.stat().st_size == 0:
        print(f"chromium screenshot failed (exit {done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
        return 2
    print(f"screenshot: {screenshot} ({screenshot.stat().st_size:,} bytes)")

    with tempfile.TemporaryDirectory(prefix="report-probe-") as tmp:
        probed = Path(tmp) / "report.html"
        probed.write_text(text.replace("</body>", PROBE + "\n</body>", 1), encoding="utf-8")
        done = run_chromium(binary, ["--dump-dom", "--virtual-time-budget=10000", probed.as_uri()])
    found = RESULT.search(done.stdout)
    if done.returncode != 0 or not found:
        print(f"chromium --dump-dom gave no image check result (exit {done.returncode}):\n{done.stderr[-2000:]}",
              file=sys.stderr)
        return 2
    result = json.loads(found.group(1))
    print(f"images: {result['images']}, natural widths: {result['widths']}")
    if result["images"] == 0:
        failures.append("the report has no images")
    if result["broken"]:
        failures.append(f"images that did not decode: {result['broken']}")

    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    if not failures:
        print("OK: every image decoded, no outside resources")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
