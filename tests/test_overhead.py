"""The byte split: every byte of the file in one category, adding up exactly where the reader allows."""

from __future__ import annotations

from ckptscan.analyze.analysis import analyze
from ckptscan.analyze.overhead import CATEGORIES
from ckptscan.inventory import FileRef, Inventory, Region, RegionKind
from tests._analysis_helpers import FILE, loose, packed, storage, tensor


def _lightning_like() -> Inventory:
    """A Lightning checkpoint as the torch reader describes one: storages in a zip, views onto them."""
    model = [("state_dict.fc.weight", (16, 8)), ("state_dict.fc.bias", (16,)), ("state_dict.bn.weight", (16,)),
             ("state_dict.bn.bias", (16,)), ("state_dict.bn.running_mean", (16,)),
             ("state_dict.bn.running_var", (16,))]  # fmt: skip
    tensors = []
    storages = []
    position = 1000  # pickle and zip headers before
    for i, (name, shape) in enumerate(model):
        t = tensor(name, shape, section="state_dict", attrs={"structure": "model"}, storage=str(i))
        tensors.append(t)
        storages.append(storage(str(i), t.nbytes, offset=position))
        position += t.nbytes + 64  # zip local header after each entry
    counter = tensor("state_dict.bn.num_batches_tracked", (), "I64", section="state_dict", storage="nb")
    tensors.append(counter)
    storages.append(storage("nb", 8, "I64", offset=position))
    position += 8 + 64
    for i, (_, shape) in enumerate(model[:4]):  # Adam: two moments and a step per parameter
        for slot in ("exp_avg", "exp_avg_sq"):
            key = f"o{i}{slot}"
            t = tensor(f"optimizer_states.0.state.{i}.{slot}", shape, section="optimizer_states",
                       attrs={"structure": "optimizer", "optimizer_state": slot}, storage=key)  # fmt: skip
            tensors.append(t)
            storages.append(storage(key, t.nbytes, offset=position))
            position += t.nbytes + 64
        key = f"o{i}step"
        tensors.append(tensor(f"optimizer_states.0.state.{i}.step", (), section="optimizer_states",
                              attrs={"structure": "optimizer", "optimizer_state": "step"}, storage=key))  # fmt: skip
        storages.append(storage(key, 4, offset=position))
        position += 4 + 64
    # callbacks: a score, viewed twice; hyper_parameters: a view of a model buffer
    tensors.append(tensor("callbacks.EarlyStopping.best_score", (), section="callbacks", storage="cb",
                          attrs={"structure": "callbacks"}))  # fmt: skip
    tensors.append(tensor("callbacks.ModelCheckpoint.best_model_score", (), section="callbacks", storage="cb",
                          attrs={"structure": "callbacks"}))  # fmt: skip
    storages.append(storage("cb", 4, offset=position))
    position += 4 + 64
    tensors.append(tensor("hyper_parameters.bn.running_mean", (16,), section="hyper_parameters", storage="4",
                          attrs={"structure": "hyper_parameters"}))  # fmt: skip
    data_end = position
    regions = [Region(FILE, RegionKind.PICKLE, 0, 1000, "data.pkl")]
    regions += [Region(FILE, RegionKind.FRAMING, s.offset + s.nbytes, 64, "zip header")  # type: ignore[operator]
                for s in storages]  # fmt: skip
    regions.append(Region(FILE, RegionKind.FRAMING, data_end, 200, "central directory"))
    return Inventory(format="torch", path=FILE, root=".", files=(FileRef(FILE, data_end + 200),),
                     tensors=tuple(tensors), storages=tuple(storages), regions=tuple(regions))  # fmt: skip


def test_lightning_like_split_is_exact() -> None:
    inventory = _lightning_like()
    a = analyze(inventory)
    o = a.overhead
    assert o.exact and o.parts["unaccounted"].bytes == 0
    assert sum(p.bytes for p in o.parts.values()) == inventory.file_bytes == o.file_bytes
    model_elements = 16 * 8 + 16 * 5 + 1
    assert o.parts["inference_weights"].elements + o.parts["buffers"].elements == model_elements
    assert o.parts["buffers"].elements == 16 * 2 + 1
    assert o.parts["optimizer_state"].elements == 2 * (16 * 8 + 16 * 3) + 4
    assert o.parts["optimizer_state"].bytes == 4 * (2 * (16 * 8 + 16 * 3) + 4)
    assert o.parts["training_state"].bytes == 4  # one score, viewed twice; the hyper-parameter view is a buffer's
    assert o.parts["dead_storage"].bytes == 0
    assert o.format_overhead == {"pickle": 1000, "framing": 64 * len(inventory.storages) + 200}
    assert a.parameters.total == 16 * 8 + 16 * 3
    roles = {t.name: d.role.value for t, d in zip(inventory.tensors, a.decisions, strict=True)}
    assert roles["state_dict.bn.weight"] == "norm" and roles["state_dict.bn.running_var"] == "buffer"
    assert roles["hyper_parameters.bn.running_mean"] == "training_state"


def test_categories_are_all_present() -> None:
    a = analyze(packed([tensor("w.weight")]))
    assert tuple(a.overhead.parts) == CATEGORIES


def test_dead_storage_is_what_no_view_covers() -> None:
    """A saved slice keeps its whole storage: the rest is dead."""
    view = tensor("fc.weight", (4, 4), storage="s", storage_offset=64)
    inventory = loose([view], storages=(storage("s", 256),))
    o = analyze(inventory).overhead
    assert o.parts["inference_weights"].bytes == 64
    assert o.parts["dead_storage"].bytes == 192
    assert o.exact


def test_strided_view_counts_its_span() -> None:
    """A transposed view of a 4x4 block covers the same 64 bytes."""
    view = tensor("fc.weight", (4, 4), storage="s", strides=(1, 4))
    o = analyze(loose([view], storages=(storage("s", 64),))).overhead
    assert o.parts["inference_weights"].bytes == 64 and o.parts["dead_storage"].bytes == 0
    assert any("strided" in n for n in o.notes)


def test_unreferenced_region_is_dead_storage() -> None:
    tensors = packed([tensor("w.weight")], header=0).tensors
    inventory = Inventory(format="t", path=FILE, root=".", files=(FileRef(FILE, 74),), tensors=tensors,
                          regions=(Region(FILE, RegionKind.UNREFERENCED, 64, 10),))  # fmt: skip
    o = analyze(inventory).overhead
    assert o.parts["dead_storage"].bytes == 10 and o.exact


def test_unaccounted_when_the_reader_leaves_bytes_out() -> None:
    base = packed([tensor("w.weight")])
    inventory = Inventory(format="t", path=FILE, root=".", files=(FileRef(FILE, base.file_bytes + 7),),
                          tensors=base.tensors, regions=base.regions)  # fmt: skip
    o = analyze(inventory).overhead
    assert o.parts["unaccounted"].bytes == 7 and not o.exact
    assert any("did not describe" in n for n in o.notes)


def test_compressed_tensors_make_the_split_approximate() -> None:
    t = tensor("w.weight", (16, 16))  # no offset: stored compressed in, say, 300 bytes
    inventory = Inventory(format="t", path=FILE, root=".", files=(FileRef(FILE, 400),), tensors=(t,),
                          regions=(Region(FILE, RegionKind.FRAMING, 0, 100),))  # fmt: skip
    o = analyze(inventory).overhead
    assert not o.exact
    assert o.parts["inference_weights"].bytes == 1024
    assert o.parts["unaccounted"].bytes == 400 - 1024 - 100
    assert any("compressed" in n for n in o.notes)


def test_missing_files_are_not_split() -> None:
    t = tensor("w.weight", offset=0, file="shard-2.safetensors")
    inventory = Inventory(format="t", path=FILE, root=".", complete=False,
                          files=(FileRef("shard-2.safetensors", 0, role="missing"),), tensors=(t,))  # fmt: skip
    o = analyze(inventory).overhead
    assert o.file_bytes == 0 and o.parts["inference_weights"].bytes == 0 and not o.exact
