"""The one place formats are registered, and content-based detection.

Each format is a module with two functions::

    def sniff(head: Head) -> bool        # cheap: magic bytes, maybe a zip directory
    def read(source: Source) -> Inventory  # header-only parse into the common model

Modules are imported lazily: the file's extension only orders the candidates (so the likely module
is usually the only one imported); the content decides. Adding a format is one module and one
line in ``FORMATS``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from ckptscan.errors import CkptscanError, UnrecognizedFormat

if TYPE_CHECKING:
    from ckptscan.inventory import Inventory
    from ckptscan.source import Head, Source


class FormatModule(Protocol):
    def sniff(self, head: Head) -> bool: ...

    def read(self, source: Source) -> Inventory: ...


@dataclass(frozen=True, slots=True)
class FormatSpec:
    """A file format ckptscan reads: its reader module (imported when needed), extensions, title."""

    name: str
    module: str
    extensions: tuple[str, ...]
    title: str

    def load(self) -> FormatModule:
        return cast(FormatModule, importlib.import_module(self.module))


FORMATS: tuple[FormatSpec, ...] = (
    FormatSpec("safetensors", "ckptscan.formats.safetensors", (".safetensors",), "safetensors"),
    FormatSpec("gguf", "ckptscan.formats.gguf", (".gguf",), "GGUF (llama.cpp / ggml)"),
    FormatSpec("sharded", "ckptscan.formats.sharded", (".index.json",), "sharded model index (HF)"),
    FormatSpec(
        "pytorch",
        "ckptscan.formats.torch",
        (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".tar", ".model"),
        "PyTorch (zip, legacy, legacy tar, TorchScript, Lightning)",
    ),
    FormatSpec("npy", "ckptscan.formats.numpy", (".npy",), "NumPy array (.npy)"),
    FormatSpec("npz", "ckptscan.formats.npz", (".npz",), "NumPy archive (.npz)"),
    FormatSpec("keras-v3", "ckptscan.formats.keras.v3", (".keras",), "Keras 3 model (.keras zip)"),
    FormatSpec("keras-weights-h5", "ckptscan.formats.keras.weights", (".weights.h5",), "Keras 3 weights (.weights.h5)"),
    FormatSpec("keras-h5", "ckptscan.formats.keras.legacy", (".h5", ".hdf5", ".keras"), "Keras legacy HDF5 (.h5)"),
    FormatSpec("hdf5", "ckptscan.formats.hdf5", (".h5", ".hdf5", ".he5"), "HDF5 (generic)"),
    FormatSpec("tf-checkpoint", "ckptscan.formats.tf_checkpoint", (".index",), "TensorFlow checkpoint (tensor bundle)"),
    FormatSpec("git-lfs-pointer", "ckptscan.formats.lfs", (), "Git LFS pointer (content not downloaded)"),
    # ONNX has no magic number: its sniff parses the first protobuf fields, so it goes last
    FormatSpec("onnx", "ckptscan.formats.onnx", (".onnx",), "ONNX"),
    # last, after every other format (ONNX included): opcode structure decides, not the extension,
    # and no file another format reads is ever taken for a plain pickle
    FormatSpec(
        "pickle",
        "ckptscan.formats.pickle",
        (".pkl", ".pickle", ".joblib", ".dill"),
        "Python pickle (plain, joblib; scanned, never loaded)",
    ),
)


class FolderFormatModule(Protocol):
    def claims(self, folder: Path) -> bool: ...

    def read_folder(self, folder: Path) -> Inventory: ...


@dataclass(frozen=True, slots=True)
class FolderFormatSpec:
    """A model that is a folder of files read together (e.g. a HF Trainer ``checkpoint-N/``).

    ``claims(folder)`` looks only at file names and small files; ``read_folder`` reads the parts
    through the file formats above and combines them (``ckptscan.inventory.combine``).
    """

    name: str
    module: str
    title: str

    def load(self) -> FolderFormatModule:
        return cast(FolderFormatModule, importlib.import_module(self.module))


FOLDER_FORMATS: tuple[FolderFormatSpec, ...] = (
    FolderFormatSpec(
        "hf-trainer-checkpoint", "ckptscan.formats.torch.trainer", "Hugging Face Trainer checkpoint folder"
    ),
)


def detect_folder(folder: Path) -> FolderFormatSpec | None:
    for spec in FOLDER_FORMATS:
        if spec.load().claims(folder):
            return spec
    return None


# -- which files make a model: one policy for `ckptscan DIR`, `ckptscan audit` and folder formats --

# Files beside a model that belong with it in a HF model folder (by name: they hold no tensors).
COMPANION_NAMES = (
    "config.json",
    "generation_config.json",
    "adapter_config.json",
    "preprocessor_config.json",
    "quantize_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer*",
    "vocab.*",
    "merges.txt",
    "chat_template.*",
    "*.tiktoken",
    "trainer_state.json",
)
# Text files that are never a model (a sharded index, ``*.index.json``, is one: see MODEL_TEXT_SUFFIXES).
TEXT_SUFFIXES = (".json", ".txt", ".md", ".py")
MODEL_TEXT_SUFFIXES = (".index.json",)


def hides_a_pickle(path: str | Path) -> bool:
    """Whether a file that ``could_be_model`` rules out by name (a ``.txt``, a ``.json``) holds a
    pickle: code that loads it by another name would run it, so it is scanned all the same."""
    from ckptscan.formats.pickle import looks_like_pickle

    try:
        with open(path, "rb") as f:
            head = f.read(256)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return looks_like_pickle(head, size)


def is_companion(name: str) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in COMPANION_NAMES)


def could_be_model(name: str) -> bool:
    """Whether a file of this name may be a model (or a model's entry point), before its content
    is sniffed. Only names that are never a model are ruled out: configs, tokenizers, text and code;
    every extension in ``FORMATS`` (``.model`` included) is left to the content to decide."""
    lower = name.lower()
    if lower.endswith(MODEL_TEXT_SUFFIXES):
        return True
    return not (is_companion(name) or lower.endswith(TEXT_SUFFIXES))


def by_name(name: str) -> FormatSpec:
    for spec in FORMATS:
        if spec.name == name:
            return spec
    raise KeyError(name)


def candidates(filename: str) -> Iterator[FormatSpec]:
    """Every format, those whose extension matches ``filename`` first (longest match first)."""
    lower = filename.lower()

    def best_match(spec: FormatSpec) -> int:
        return max((len(ext) for ext in spec.extensions if lower.endswith(ext)), default=0)

    yield from sorted(FORMATS, key=lambda spec: -best_match(spec))


def detect(source: Source) -> FormatSpec:
    """The format whose ``sniff`` accepts the file's content."""
    head = source.head()
    tried = []
    for spec in candidates(source.path.name):
        tried.append(spec.name)
        if spec.load().sniff(head):
            return spec
    raise UnrecognizedFormat(f"not a recognized checkpoint (tried: {', '.join(tried)})", path=str(source.path))


def read_source(source: Source) -> Inventory:
    """Detect the format of an open file and read its inventory."""
    spec = detect(source)
    try:
        return spec.load().read(source)
    except CkptscanError as e:
        e.located(path=str(source.path), format=spec.name)
        raise
