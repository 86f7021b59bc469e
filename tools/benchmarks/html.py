"""The HTML report of a 3,000-tensor model: writing it, its size, and its load time in headless Chromium.

The model is a safetensors file with 3,003 tensors (300 blocks of 10 tensors, an embedding, a head
and a norm; small shapes, since only the names and sizes reach the page). Rows:

* ``ckptscan report FILE -o page.html`` as a whole process (read, analyze, render, write);
* the page in headless Chromium (Debian's ``/usr/bin/chromium`` or ``$CKPTSCAN_CHROMIUM``, driven by
  Playwright): from ``page.goto`` until the treemap is drawn (``body[data-ready]``, set by the
  script after the first layout), best of N fresh tabs in one browser; beside it the same
  navigation to an empty page, the floor of that measurement. The goal is < 1 s and < 2 MB.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from bench import Context, Row, ckptscan, measure, python

LAYERS, PER_LAYER = 300, 10

# zoom into the model, then into its 300 repeated blocks (each drawn with its tensors inside)
ZOOM = """() => {
  const find = (p) => Array.from(document.querySelectorAll('.tm-box .tile')).find(e => e.dataset.path === p);
  const t0 = performance.now();
  find('model').click();
  find('model.layers').click();
  return [(performance.now() - t0) / 1000, document.querySelectorAll('.tile').length];
}"""

LOAD = """
import json, sys, time
from playwright.sync_api import sync_playwright
ZOOM = sys.argv[4]
page_path, executable, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {}
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=executable or None, args=["--no-sandbox"])
    for name, url in (("blank", "about:blank"), ("report", "file://" + page_path)):
        best = None
        for _ in range(repeats):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            start = time.perf_counter()
            page.goto(url)
            if name == "report":
                page.wait_for_selector("body[data-ready='1']", timeout=30000)
            took = time.perf_counter() - start
            tiles = page.evaluate("() => document.querySelectorAll('.tile').length")
            zoom = page.evaluate(ZOOM) if name == "report" else [0, 0]
            page.close()
            best = took if best is None else min(best, took)
        out[name] = [best, tiles, zoom]
    browser.close()
print(json.dumps(out))
"""


def write_model(path: Path) -> int:
    names = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"]
    names += [f"model.layers.{i}.block{j // 5}.proj{j % 5}.weight" for i in range(LAYERS) for j in range(PER_LAYER)]
    header: dict[str, object] = {}
    offset = 0
    for i, name in enumerate(names):
        shape = [64, 32 + i % 7]
        size = shape[0] * shape[1] * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + offset)
    return len(names)


def chromium() -> str:
    for candidate in (os.environ.get("CKPTSCAN_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return ""  # Playwright's own download, if installed


def run(ctx: Context) -> list[Row]:
    model = ctx.workdir / "3k.safetensors"
    count = write_model(model)
    page = ctx.workdir / "3k.html"
    case = f"{count:,}-tensor safetensors"
    wall, rss = measure(ckptscan("report", str(model), "-o", str(page)), ctx)
    size = page.stat().st_size
    rows = [Row(case, "ckptscan report -o page.html", wall, rss, f"page {size / 1e6:.2f} MB (goal < 2 MB)")]
    import subprocess

    proc = subprocess.run([*python(LOAD), str(page), chromium(), str(max(ctx.repeats, 3)), ZOOM], capture_output=True,
                          text=True, env={**os.environ})  # fmt: skip
    if proc.returncode != 0:
        rows.append(Row(case, "headless Chromium", 0.0, 0.0, f"not measured: {proc.stderr.strip()[-200:]}"))
        return rows
    got = json.loads(proc.stdout)
    blank, report = got["blank"][0], got["report"]
    rows.append(Row("empty page", "headless Chromium: navigation floor", blank, 0.0, ""))
    rows.append(Row(case, "headless Chromium: load + treemap drawn", report[0], 0.0,
                    f"{report[1]:,} tiles drawn; goal < 1 s"))  # fmt: skip
    rows.append(Row(case, "headless Chromium: zoom into the 300 blocks", report[2][0], 0.0,
                    f"{report[2][1]:,} tiles drawn (script time)"))  # fmt: skip
    return rows
