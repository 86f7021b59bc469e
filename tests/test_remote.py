"""Remote paths (http(s)://, hf://, s3://) against servers on 127.0.0.1: the same inventory as the
local file, the bytes and requests it took, and one clear error per misbehaving server."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ckptscan import remote
from ckptscan.errors import UnsafePath
from ckptscan.pipeline import build
from ckptscan.report.json import result_dict
from ckptscan.scan import scan
from tests.helpers import run_cli
from tests.remote_server import FileServer, file_server, moto_s3

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
FILES = sorted(
    p.relative_to(TESTDATA).as_posix()
    for p in TESTDATA.rglob("*")
    if p.is_file() and p.suffix not in (".md", ".json") and not (scan(p).error and scan(p).format is None)
)


@pytest.fixture(scope="module")
def server() -> Iterator[FileServer]:
    with file_server(TESTDATA) as s:
        yield s


@pytest.fixture(autouse=True)
def remote_options() -> Iterator[None]:
    saved = remote.options()
    yield
    remote.configure(download=saved.download, budget=saved.budget, timeout_s=saved.timeout_s)


def comparable(record: dict[str, Any], *prefixes: str) -> Any:
    record = {k: v for k, v in record.items() if k not in ("path", "root", "remote")}
    text = json.dumps(record, sort_keys=True)
    for prefix in prefixes:
        text = text.replace(prefix, "")
    return json.loads(text)


@pytest.mark.parametrize("rel", FILES)
def test_same_inventory_over_http(server: FileServer, rel: str) -> None:
    local = scan(TESTDATA / rel)
    far = scan(f"{server.url}/{rel}")
    assert far.error == local.error or (far.error and local.error and far.error.code == local.error.code)
    assert comparable(result_dict(build(far)), f"{server.url}/", f"{TESTDATA}/") == comparable(
        result_dict(build(local)), f"{server.url}/", f"{TESTDATA}/"
    )
    assert far.remote is not None and far.remote["requests"] >= 1


def test_safetensors_header_in_at_most_three_requests(server: FileServer) -> None:
    rel = "safetensors/llama-tiny/model.safetensors"
    header = 8 + int.from_bytes((TESTDATA / rel).read_bytes()[:8], "little")
    server.log.clear()
    result = scan(f"{server.url}/{rel}")
    assert result.ok and result.remote is not None
    model_requests = [r for r in server.log.requests if r[0] == rel]
    assert len(model_requests) <= 2  # the file itself; config.json beside it is the third
    assert result.remote["requests"] == len(server.log.requests) <= 3
    assert result.remote["bytes_transferred"] == server.log.bytes_sent
    size = (TESTDATA / rel).stat().st_size
    assert result.remote["model_bytes"] == size
    config = (TESTDATA / "safetensors/llama-tiny/config.json").stat().st_size
    assert result.remote["bytes_transferred"] - config <= 1.2 * header + 64 * 1024
    assert result.inventory is not None and result.inventory.sidecars["config.json"]["model_type"]


def test_gguf_reads_only_the_header(tmp_path: Path, server: FileServer) -> None:
    # a GGUF whose data section is large: the header is read, the data never
    source = TESTDATA / "gguf/llama-tiny-q8_0.gguf"
    big = tmp_path / "big.gguf"
    shutil.copy(source, big)
    with big.open("r+b") as f:
        f.truncate(64 << 20)  # sparse tail: the data section's size does not matter for the header
    local = scan(big)
    with file_server(tmp_path) as s:
        far = scan(f"{s.url}/big.gguf")
    assert local.inventory is not None and far.inventory is not None and far.remote is not None
    data_offset = local.inventory.metadata["gguf"]["data_offset"]
    assert far.remote["bytes_transferred"] <= 1.2 * data_offset + 64 * 1024 + 64 * 1024  # + the config.json probe
    assert [t.name for t in far.inventory.tensors] == [t.name for t in local.inventory.tensors]


def test_folder_expands_to_its_index(server: FileServer) -> None:
    run = run_cli(f"{server.url}/safetensors/sharded-tiny/model.safetensors.index.json", "--json")
    assert run.code == 0, run.err
    doc = run.json()
    jsonschema = pytest.importorskip("jsonschema")
    from ckptscan.report.json import schema

    jsonschema.Draft202012Validator(schema()).validate(doc)
    (result,) = doc["results"]
    assert result["format"] == "safetensors-sharded"
    assert result["remote"]["model_bytes"] == sum(
        p.stat().st_size for p in (TESTDATA / "safetensors/sharded-tiny").iterdir() if p.name != "config.json"
    )


def test_terminal_report_states_the_transfer(server: FileServer) -> None:
    run = run_cli(f"{server.url}/gguf/tiny-big-endian.gguf", "--no-color")
    assert run.code == 0, run.err
    assert "remote fetched" in run.out and "request" in run.out


def test_memory_command_works_remotely(server: FileServer) -> None:
    run = run_cli("memory", f"{server.url}/safetensors/llama-tiny/model.safetensors", "--json")
    assert run.code == 0, run.err
    assert run.json()["results"][0]["memory"] is not None


# -- the Hub ---------------------------------------------------------------------------------------


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    shutil.copytree(TESTDATA / "safetensors/sharded-tiny", tmp_path / "org/sharded-tiny")
    shutil.copytree(TESTDATA / "gguf", tmp_path / "org/gguf-models")
    with file_server(tmp_path) as s:
        monkeypatch.setenv("HF_ENDPOINT", s.url)
        monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
        yield s


def test_hub_model_id_resolves_to_its_index(hub: FileServer) -> None:
    run = run_cli("hf://org/sharded-tiny", "--json")
    assert run.code == 0, run.err
    (result,) = run.json()["results"]
    local = scan(TESTDATA / "safetensors/sharded-tiny/model.safetensors.index.json")
    assert result["path"] == "hf://org/sharded-tiny/model.safetensors.index.json"
    assert [t["name"] for t in result["tensors"]] == [t.name for t in local.inventory.tensors]  # type: ignore[union-attr]
    assert result["remote"]["requests"] >= 1
    assert "hf_secret_token_value" not in run.out + run.err
    assert any(path.startswith("api/models/org/sharded-tiny") for path, _ in hub.log.requests)


def test_hub_folder_of_several_models_and_revision(hub: FileServer) -> None:
    run = run_cli("hf://org/gguf-models@v1.0", "--json")
    assert run.code == 0, run.err
    paths = [r["path"] for r in run.json()["results"]]
    assert paths == [f"hf://org/gguf-models@v1.0/{p.name}" for p in sorted((TESTDATA / "gguf").iterdir())]
    assert any("/revision/v1.0" in path for path, _ in hub.log.requests)


def test_hub_missing_repository_is_one_line(hub: FileServer) -> None:
    run = run_cli("hf://org/nothing-here")
    assert run.code == 1
    assert "hf://org/nothing-here" in run.out and "404" in run.out


# -- S3 (moto) -------------------------------------------------------------------------------------


def test_s3_same_inventory_as_local() -> None:
    pytest.importorskip("moto")
    pytest.importorskip("s3fs")
    with moto_s3("models", TESTDATA / "safetensors", "zoo"):
        run = run_cli("s3://models/zoo/sharded-tiny", "--json")
        single = scan("s3://models/zoo/all_dtypes.safetensors")
    assert run.code == 0, run.err
    (result,) = run.json()["results"]
    local = scan(TESTDATA / "safetensors/sharded-tiny/model.safetensors.index.json")
    assert result["path"] == "s3://models/zoo/sharded-tiny/model.safetensors.index.json"
    assert comparable(result, "s3://models/zoo/sharded-tiny/") == comparable(result_dict(build(local)), f"{TESTDATA}/")
    assert single.ok and single.remote is not None
    assert single.remote["requests"] <= 3  # a listing of its folder, then one ranged GET (+ config probe none)


# -- misbehaving servers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expect"),
    [
        ("ignore_range", "ignored the Range request"),
        ("drop_after", "connection"),
        ("lie_length", "Content-Length"),
        ("slow", "no answer within"),
    ],
)
def test_misbehaving_server_is_one_clear_error(tmp_path: Path, rule: str, expect: str) -> None:
    remote.configure(timeout_s=0.5)
    shutil.copy(TESTDATA / "safetensors/all_dtypes.safetensors", tmp_path / "bad.safetensors")
    shutil.copy(TESTDATA / "safetensors/all_dtypes.safetensors", tmp_path / "good.safetensors")
    with file_server(tmp_path) as s:
        b = s.behaviour
        if rule == "ignore_range":
            b.ignore_range.add("bad")
        elif rule == "drop_after":
            b.drop_after["bad"] = 100
        elif rule == "lie_length":
            b.lie_length.add("bad")
        else:
            b.slow["bad"] = 2.0
        run = run_cli(f"{s.url}/bad.safetensors", f"{s.url}/good.safetensors", "--json")
    assert run.code == 1
    bad, good = run.json()["results"]
    assert bad["error"]["code"] == "remote-error"
    assert expect in bad["error"]["message"]
    assert "\n" not in bad["error"]["message"] and "Traceback" not in run.err
    assert good["error"] is None and good["totals"]["tensors"] == 20


def test_budget_asks_for_download(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    writer = gguf.GGUFWriter(str(tmp_path / "vocab.gguf"), "llama")
    writer.add_token_list([f"token-{i:06d}" for i in range(30000)])  # ~0.5 MB of metadata
    writer.add_tensor("w", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    remote.configure(budget=200_000)
    with file_server(tmp_path) as s:
        refused = scan(f"{s.url}/vocab.gguf")
        sent_when_refused = s.log.bytes_sent
        run = run_cli(f"{s.url}/vocab.gguf", "--download", "--json")
    assert refused.error is not None and refused.error.code == "needs-download"
    assert "--download" in refused.error.message
    assert sent_when_refused <= 200_000 + 64 * 1024
    assert run.code == 0, run.err
    assert run.json()["results"][0]["remote"]["download"] is True


def test_credentials_and_queries_are_never_shown(server: FileServer) -> None:
    url = server.url.replace("http://", "http://user:pa55word@") + "/safetensors/edge_cases.safetensors?sig=SIGNED"
    run = run_cli(url, "--json")
    assert run.code == 0, run.err
    assert "pa55word" not in run.out + run.err and "SIGNED" not in run.out + run.err
    assert run.json()["results"][0]["path"] == f"{server.url}/safetensors/edge_cases.safetensors"


def test_related_paths_stay_inside_the_model_folder() -> None:
    assert remote.resolve_key("a/b", "c.safetensors", referrer="x") == "a/b/c.safetensors"
    for bad in ("../c", "/etc/passwd", "s3://other/key", "a/../../c"):
        with pytest.raises(UnsafePath):
            remote.resolve_key("a/b", bad, referrer="x")


def test_sharded_index_naming_a_path_outside_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "secret.safetensors").write_bytes((TESTDATA / "safetensors/edge_cases.safetensors").read_bytes())
    (tmp_path / "m/model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../secret.safetensors"}}))
    with file_server(tmp_path) as s:
        result = scan(f"{s.url}/m/model.safetensors.index.json")
        assert not any(p == "secret.safetensors" for p, _ in s.log.requests)
    assert result.error is not None and result.error.code == "unsafe-path"


def test_is_remote() -> None:
    assert remote.is_remote("hf://org/model") and remote.is_remote("s3://b/k") and remote.is_remote("https://x/y")
    assert not remote.is_remote("file:///tmp/x") and not remote.is_remote("/tmp/x") and not remote.is_remote("C:\\x")
