"""The HTML report (``ckptscan report``, ``diff --html``, ``audit --html``): markup, escaping, the treemap.

The first half checks the page as text (always runs). The second half opens it in a real headless
Chromium through Playwright: no console errors, tile areas add up to the file size, a click zooms,
a hostile tensor name stays text. Those tests skip, saying why, when the ``playwright`` package or a
Chromium binary is missing (.ci/run installs both: docs/html.md). A screenshot is written to
``$CKPTSCAN_TEST_ARTIFACTS`` (default ``build/test-artifacts``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ckptscan import cli, pipeline
from ckptscan.report import html
from tests.conftest import REAL_MODELS, real_entries

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "testdata"
HOSTILE_NAMES = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2">',
    "</script><script>window.__pwned = 3</script>",
    "model.layers.0.\u2028line\u2029sep&amp;",
    "bad.\udc80.surrogate",
]
TREEMAP_FIXTURES = [
    DATA / "diff" / "base.safetensors",
    DATA / "gguf" / "llama-tiny-q8_0.gguf",
    DATA / "onnx" / "graph.onnx",
    DATA / "safetensors" / "sharded-tiny",
    DATA / "numpy" / "stored.npz",
]


def write_safetensors(path: Path, names: list[str], rows: int = 4, cols: int = 8) -> Path:
    """A float32 safetensors file written by hand (so names may hold anything JSON allows)."""
    header: dict[str, Any] = {}
    size = rows * cols * 4
    for i, name in enumerate(names):
        header[name] = {"dtype": "F32", "shape": [rows, cols], "data_offsets": [i * size, (i + 1) * size]}
    text = json.dumps(header).encode("ascii")
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(size * len(names)))
    return path


def page_for(*paths: Path, stats: bool = False) -> str:
    options = pipeline.Options()
    if stats:
        from ckptscan.stats import StatsOptions

        options = pipeline.Options(stats=StatsOptions(workers=1, executor="thread"))
    return html.render(list(pipeline.run([str(p) for p in paths], options)))


def data_block(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="ckptscan-data">(.*?)</script>', page, re.S)
    assert match is not None
    loaded: dict[str, Any] = json.loads(match.group(1))
    return loaded


# -- the page as text ---------------------------------------------------------------------------------


def test_hostile_names_are_escaped(tmp_path: Path) -> None:
    page = page_for(write_safetensors(tmp_path / "evil.safetensors", HOSTILE_NAMES))
    page.encode("utf-8")  # lone surrogates were made visible, not written raw
    body, _, scripts = page.partition('<script type="application/json"')
    assert "<script>window" not in page and "<img" not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in body or "__pwned" not in body
    # exactly two script elements: the data block and our own code
    assert page.count("<script") == 2 and page.count("</script>") == 2
    data = scripts.split(">", 1)[1].split("</script>", 1)[0]
    assert all(ch not in data for ch in "<>&\u2028\u2029") and data.isascii()
    names = {leaf["p"] for leaf in _leaves(data_block(page)["models"][0]["tree"])}
    assert set(HOSTILE_NAMES) <= names
    # no event handler attribute anywhere in the markup
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", body)


def test_hostile_names_in_tables_are_escaped(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    page = page_for(write_safetensors(tmp_path / "evil.safetensors", HOSTILE_NAMES), stats=True)
    body = page.partition('<script type="application/json"')[0]
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in body  # the per-tensor table, as text
    assert "&lt;img src=x onerror=&quot;window.__pwned = 2&quot;&gt;" in body
    assert "bad.\\udc80.surrogate" in body
    assert "<img" not in body and body.count("<script") == 0


def test_content_security_policy_matches_the_inline_blocks(tmp_path: Path) -> None:
    page = page_for(DATA / "diff" / "base.safetensors")
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None
    policy = csp.group(1)
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy
    script = page.rsplit("<script>", 1)[1].split("</script>", 1)[0]
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    for kind, text in (("script-src", script), ("style-src", style)):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"{kind} 'sha256-{digest}'" in policy
    assert "http://" not in page.replace("http-equiv", "") and "https://" not in page  # nothing from a network


@pytest.mark.parametrize("path", TREEMAP_FIXTURES, ids=lambda p: p.name)
def test_tree_adds_up_to_the_file_size(path: Path) -> None:
    [model] = list(pipeline.run([str(path)]))
    assert model.inventory is not None and model.analysis is not None
    tree = html.tensor_tree(model.inventory, model.analysis)
    assert tree["file_bytes"] == model.inventory.file_bytes
    assert html.tree_total(tree) == model.inventory.file_bytes
    _check_sums(tree)


def _check_sums(node: dict[str, Any]) -> None:
    if "c" in node:
        assert node["b"] == sum(c["b"] for c in node["c"])
        for c in node["c"]:
            _check_sums(c)


def _leaves(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "c" in node:
        for c in node["c"]:
            yield from _leaves(c)
    else:
        yield node


@pytest.mark.parametrize(
    "entry", real_entries("gguf", "safetensors", "pytorch", "lightning-ckpt", "keras-hdf5", "onnx")
)
def test_real_files_tree_adds_up(entry: dict[str, Any]) -> None:
    [model] = list(pipeline.run([str(REAL_MODELS / entry["path"])]))
    assert model.inventory is not None and model.analysis is not None
    tree = html.tensor_tree(model.inventory, model.analysis)
    _check_sums(tree)
    if model.analysis.overhead.exact:
        assert html.tree_total(tree) == model.inventory.file_bytes
    else:  # bytes the reader could not place are a tile of their own; compressed data may exceed the file
        assert html.tree_total(tree) >= model.inventory.file_bytes
    page = html.render([model])
    assert len(page.encode("utf-8")) < 2_000_000


def test_repeated_blocks_are_collapsed() -> None:
    [model] = list(pipeline.run([str(DATA / "diff" / "base.safetensors")]))
    assert model.inventory is not None and model.analysis is not None
    tree = html.tensor_tree(model.inventory, model.analysis)
    top = {c["n"]: c for c in tree["c"]}
    assert set(top) == {"model", "lm_head", "[format overhead]"}
    inner = {c["n"]: c for c in top["model"]["c"]}
    assert "layers.[0-1]" in inner and inner["layers.[0-1]"]["k"] == "blocks"
    assert [c["n"] for c in inner["layers.[0-1]"]["c"]] == ["0", "1"]
    assert inner["layers.[0-1]"]["p"] == "model.layers"


def test_shared_views_and_optimizer_state_are_placed_once() -> None:
    torch_dir = DATA / "torch"
    path = next((p for p in sorted(torch_dir.glob("*")) if "lightning" in p.name or "optim" in p.name), None)
    if path is None:
        pytest.skip("no torch training-checkpoint fixture")
    [model] = list(pipeline.run([str(path)]))
    assert model.inventory is not None and model.analysis is not None
    tree = html.tensor_tree(model.inventory, model.analysis)
    _check_sums(tree)
    assert html.tree_total(tree) >= model.inventory.file_bytes or not model.analysis.overhead.exact
    if model.analysis.overhead.exact:
        assert html.tree_total(tree) == model.inventory.file_bytes


def big_model(path: Path, layers: int = 300, per_layer: int = 10) -> Path:
    names = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"]
    for i in range(layers):
        names += [f"model.layers.{i}.block.t{j}.weight" for j in range(per_layer)]
    return write_safetensors(path, names[: 3 + layers * per_layer - 3], rows=2, cols=4)


def test_a_3000_tensor_page_stays_under_2_mb(tmp_path: Path) -> None:
    path = big_model(tmp_path / "big.safetensors")
    page = page_for(path)
    tree = data_block(page)["models"][0]["tree"]
    assert sum(1 for _ in _leaves(tree)) >= 2990
    assert len(page.encode("utf-8")) < 2_000_000


def test_stats_tables_and_histograms() -> None:
    pytest.importorskip("numpy")
    page = page_for(DATA / "stats" / "integrity.safetensors", stats=True)
    assert "Value statistics" in page and page.count('class="hist"') == 2
    assert '<table class="sortable"' in page and "SQNR int8 dB" in page
    assert "measured SQNR dB" in page  # the stats pass's measured error beside the int8/int4 targets


def test_cli_report_diff_and_audit_pages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert cli.main(["report", str(DATA / "diff" / "base.safetensors"), "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    diff_page = tmp_path / "d.html"
    args = ["diff", str(DATA / "diff" / "base.safetensors"), str(DATA / "diff" / "same.gguf"), "--html", str(diff_page)]
    assert cli.main([*args, "--json"]) == 0
    text = diff_page.read_text(encoding="utf-8")
    assert 'id="diff"' in text and text.count('class="treemap"') == 2
    audit_page = tmp_path / "a.html"
    assert cli.main(["audit", str(DATA / "diff"), "--workers", "0", "--json", "--html", str(audit_page)]) == 0
    text = audit_page.read_text(encoding="utf-8")
    assert 'id="audit-models"' in text and text.count('<a href="#model-') >= 6
    capsys.readouterr()


def test_diff_schema_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema", "--diff"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["title"] == "ckptscan diff --json" and "matched" in printed["properties"]


def test_unwritable_output_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["report", str(DATA / "diff" / "base.safetensors"), "-o", str(tmp_path / "no" / "such" / "x.html")])
    assert e.value.code == cli.EXIT_INPUT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0]


# -- in a real browser ----------------------------------------------------------------------------------


def chromium_path() -> str | None:
    """Chromium to drive: $CKPTSCAN_CHROMIUM, Debian's chromium, or Playwright's own download."""
    for candidate in (os.environ.get("CKPTSCAN_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):  # fmt: skip
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need the playwright package (pip install playwright) and a Chromium")
    executable = chromium_path()
    with sync_playwright() as p:
        try:
            if executable is not None:
                b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            else:
                b = p.chromium.launch()  # a browser from `playwright install chromium`, if any
        except Exception as e:  # no browser at all, or one that cannot start here
            pytest.skip(f"browser tests need Chromium (apt-get install chromium, or set CKPTSCAN_CHROMIUM): {e}")
        yield b
        b.close()


def open_page(browser: Any, path: Path) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=10_000)
    return page, errors


def artifacts() -> Path:
    folder = Path(os.environ.get("CKPTSCAN_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def top_tiles(page: Any, index: int = 0) -> list[dict[str, Any]]:
    tiles: list[dict[str, Any]] = page.evaluate(
        """(i) => Array.from(document.querySelectorAll('.treemap')[i].querySelectorAll('.tm-box > .tile'))
              .map(e => ({path: e.dataset.path, bytes: +e.dataset.bytes, w: e.getBoundingClientRect().width,
                          h: e.getBoundingClientRect().height, group: e.classList.contains('group')}))""",
        index,
    )
    return tiles


@pytest.mark.parametrize("path", TREEMAP_FIXTURES, ids=lambda p: p.name)
def test_browser_tiles_add_up(browser: Any, tmp_path: Path, path: Path) -> None:
    out = tmp_path / "r.html"
    out.write_text(page_for(path), encoding="utf-8")
    page, errors = open_page(browser, out)
    [model] = list(pipeline.run([str(path)]))
    assert model.inventory is not None
    tiles = top_tiles(page)
    assert sum(t["bytes"] for t in tiles) == model.inventory.file_bytes
    box = page.evaluate("() => { const r = document.querySelector('.tm-box').getBoundingClientRect(); "
                        "return [r.width - 2, r.height - 2]; }")  # fmt: skip
    area = sum(t["w"] * t["h"] for t in tiles)
    assert area == pytest.approx(box[0] * box[1], rel=0.01)  # area is bytes: the tiles fill the box
    for t in tiles:  # and each tile's share of the area is its share of the bytes
        assert t["w"] * t["h"] / area == pytest.approx(t["bytes"] / model.inventory.file_bytes, abs=0.01)
    assert errors == []
    page.close()


def test_browser_click_zooms_and_sorts(browser: Any, tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    out = tmp_path / "r.html"
    out.write_text(page_for(DATA / "diff" / "base.safetensors", stats=True), encoding="utf-8")
    page, errors = open_page(browser, out)
    before = top_tiles(page)
    model = next(t for t in before if t["path"] == "model")
    page.locator(".tm-box > .tile.group", has_text="model").first.click(position={"x": 30, "y": 5})
    after = top_tiles(page)
    assert [t["path"] for t in after] != [t["path"] for t in before]
    assert sum(t["bytes"] for t in after) == model["bytes"]
    assert "layers.[0-1]" in page.locator(".tm-box").inner_text()
    crumbs = page.locator(".tm-crumbs .tm-crumb").all_inner_texts()
    assert crumbs[0] == "(model)" and len(crumbs) == 2
    page.locator(".tm-crumbs .tm-crumb").first.click()
    assert [t["path"] for t in top_tiles(page)] == [t["path"] for t in before]
    # colour by dtype: the tiles take the dtype's colour and the legend follows
    page.select_option(".tm-color", "dtype")
    assert page.locator(".legend-dtype").first.is_visible() and not page.locator(".legend-role").first.is_visible()
    tensor_tiles = ".tile.leaf:not([data-kind=overhead])"
    colors = page.eval_on_selector_all(tensor_tiles, "els => els.map(t => t.style.background)")
    assert colors and set(colors) == {"rgb(78, 121, 167)"}  # every tensor is F32: the first palette colour
    # sortable stats table: click "values" twice -> descending order
    header = page.locator("table.sortable th", has_text="values").first
    header.click()
    header.click()
    keys = page.evaluate("""() => { const t = document.querySelectorAll('table.sortable th');
        const th = Array.from(t).find(h => h.textContent === 'values'); const table = th.closest('table');
        const col = Array.from(th.parentNode.children).indexOf(th);
        return Array.from(table.tBodies[0].rows).map(r => parseFloat(r.cells[col].dataset.v)); }""")
    assert keys == sorted(keys, reverse=True) and len(keys) == 21
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts() / "report.png"), full_page=False)
    assert errors == []
    page.close()


def test_browser_hostile_names_render_as_text(browser: Any, tmp_path: Path) -> None:
    out = tmp_path / "evil.html"
    out.write_text(page_for(write_safetensors(tmp_path / "evil.safetensors", HOSTILE_NAMES)), encoding="utf-8")
    page, errors = open_page(browser, out)
    assert page.evaluate("() => window.__pwned") is None
    assert page.evaluate("() => document.querySelectorAll('main img, main script').length") == 0
    shown = page.evaluate("() => Array.from(document.querySelectorAll('.tile')).map(t => t.dataset.path)")
    assert {"<script>window.__pwned = 1</script>", '<img src=x onerror="window.__pwned = 2">'} <= set(shown)
    # the tooltip carries the whole name as text
    titles = page.evaluate("() => Array.from(document.querySelectorAll('.tile.leaf')).map(t => t.title)")
    assert any(t.startswith('<img src=x onerror="window.__pwned = 2">') for t in titles)
    assert errors == []
    page.close()


def test_browser_diff_and_audit_pages(browser: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("numpy")
    pytest.importorskip("gguf")
    diff_page, audit_page = tmp_path / "d.html", tmp_path / "a.html"
    base, q8 = DATA / "diff" / "base.safetensors", DATA / "diff" / "q8_0.gguf"
    assert cli.main(["diff", str(base), str(q8), "--stats", "--json", "--html", str(diff_page)]) == 0
    assert cli.main(["audit", str(DATA / "diff"), str(DATA / "gguf"), "--workers", "0", "--json",
                     "--html", str(audit_page)]) == 0  # fmt: skip
    capsys.readouterr()
    page, errors = open_page(browser, diff_page)
    assert page.locator("#diff-values tbody tr").count() == 21
    assert errors == []
    page.close()
    page, errors = open_page(browser, audit_page)
    rows = page.locator("#audit-models tbody tr")
    assert rows.count() == 9
    page.locator("#audit-models th", has_text="bytes").first.click()
    link = page.locator("#audit-models tbody tr a").first
    target = link.get_attribute("href")
    link.click()
    assert page.evaluate("() => location.hash") == target
    assert errors == []
    page.close()


@pytest.mark.parametrize("entry", real_entries("gguf", "safetensors", "pytorch", "lightning-ckpt", "onnx"))
def test_browser_real_files(browser: Any, tmp_path: Path, entry: dict[str, Any]) -> None:
    [model] = list(pipeline.run([str(REAL_MODELS / entry["path"])]))
    assert model.inventory is not None and model.analysis is not None
    out = tmp_path / "real.html"
    out.write_text(html.render([model]), encoding="utf-8")
    page, errors = open_page(browser, out)
    tree = html.tensor_tree(model.inventory, model.analysis)
    assert sum(t["bytes"] for t in top_tiles(page)) == html.tree_total(tree)
    assert errors == []
    page.close()
