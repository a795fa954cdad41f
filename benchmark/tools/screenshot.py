"""A PNG of the Answers box of a run's ``leaderboard.html``, rendered by headless Chromium.

    python -m benchmark.tools.screenshot results/my-run --out docs/img/answers.png

The page is rendered offline (no network: every host unresolvable, the proxy a closed port)
in a window 1400 px wide, the box's place is read from the rendered page, and the screenshot
is cropped to it with a small margin. The page is copied to a temporary folder with a short
script that records the box's place; the run folder is only read. Needs Chromium
(``/usr/bin/chromium``, Debian's ``apt-get install chromium``, or ``--chromium PATH``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

from benchmark.errors import UserError
from benchmark.tools.run_summary import run_tool

BOX_ID = "answers"
WIDTH = 1400
MARGIN = 8
# Records the box's page coordinates on <body> once the page (and its figures) are drawn.
PROBE = ("<script>window.addEventListener('load',function(){var r=document.getElementById('%s')"
         ".getBoundingClientRect();document.body.setAttribute('data-box',[r.left+scrollX,r.top+scrollY,"
         "r.width,r.height].map(Math.round).join(','));});</script>")


def find_chromium(given: str | None = None) -> str:
    """The Chromium executable: ``given``, else ``chromium`` on PATH, else ``/usr/bin/chromium``."""
    for candidate in (given, shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise UserError("Chromium not found: install it (Debian: apt-get install chromium) or give --chromium PATH")


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--force-device-scale-factor=1", f"--user-data-dir={profile}",
           "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--virtual-time-budget=10000", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        raise UserError(f"Chromium failed (exit {out.returncode}): {out.stderr.strip()[-300:]}")
    return out


def box_of(dom: str) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the box, from the rendered DOM's ``data-box`` attribute."""
    found = re.search(r'data-box="(\d+),(\d+),(\d+),(\d+)"', dom)
    if not found:
        raise UserError(f"the page has no #{BOX_ID} box: is it a leaderboard.html written by `python -m benchmark run`?")
    left, top, width, height = (int(v) for v in found.groups())
    if width == 0 or height == 0:
        raise UserError(f"the #{BOX_ID} box of the page is empty")
    return left, top, width, height


def crop_box(png: Path, box: tuple[int, int, int, int], out: Path, margin: int = MARGIN) -> tuple[int, int]:
    """Crop the screenshot ``png`` to ``box`` plus ``margin`` px (inside the image) and write ``out``."""
    left, top, width, height = box
    with Image.open(png) as im:
        area = (max(0, left - margin), max(0, top - margin),
                min(im.width, left + width + margin), min(im.height, top + height + margin))
        cropped = im.crop(area).convert("RGB")
    out.parent.mkdir(parents=True, exist_ok=True)
    cropped.save(out, optimize=True)
    return cropped.size


def screenshot(run_dir: Path, out: Path, chromium: str | None = None, width: int = WIDTH) -> tuple[int, int]:
    """Write the PNG of the Answers box of ``run_dir/leaderboard.html`` to ``out``; return its size."""
    page = Path(run_dir) / "leaderboard.html"
    if not page.is_file():
        raise UserError(f"{page} not found: give a run folder (results/<run>) of a finished run")
    binary = find_chromium(chromium)
    html = page.read_text(encoding="utf-8")
    if "</body>" not in html:
        raise UserError(f"{page} is not a complete HTML page")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        probed = tmp / "page.html"
        probed.write_text(html.replace("</body>", PROBE % BOX_ID + "</body>", 1), encoding="utf-8")
        dom = _chromium(binary, tmp / "profile", f"--window-size={width},900", "--dump-dom", probed.as_uri()).stdout
        box = box_of(dom)
        shot = tmp / "shot.png"
        height = box[1] + box[3] + 2 * MARGIN
        _chromium(binary, tmp / "profile", f"--window-size={width},{height}", f"--screenshot={shot}", probed.as_uri())
        return crop_box(shot, box, Path(out))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.screenshot", description=__doc__.splitlines()[0])
    p.add_argument("run", help="run folder holding leaderboard.html (results/<run>)")
    p.add_argument("--out", default="docs/img/answers.png", help="PNG to write (default: docs/img/answers.png)")
    p.add_argument("--chromium", help="Chromium executable (default: chromium on PATH, else /usr/bin/chromium)")
    p.add_argument("--width", type=int, default=WIDTH, help=f"window width in px (default {WIDTH})")
    args = p.parse_args(argv)

    def work() -> None:
        w, h = screenshot(Path(args.run), Path(args.out), args.chromium, args.width)
        print(f"{args.out}: {w} x {h} px, the Answers box of {Path(args.run) / 'leaderboard.html'}")

    return run_tool(work)

if __name__ == "__main__":
    raise SystemExit(main())
