"""Walking the folders an audit is given, and planning what to read as one model.

The walk only lists and stats; nothing is opened here. Rules:

- Hidden files and folders (a name starting with ``.``) are skipped unless ``hidden`` is set;
  version-control folders (``.git``, ``.hg``, ``.svn``, ``.bzr``, ``CVS``, ``_darcs``) always are.
- ``exclude`` globs prune files and folders; ``include`` globs, when given, keep only the files that
  match one. A glob with a ``/`` matches the path relative to the audited root, one without matches
  the base name (``--exclude 'runs/*/logs' --include '*.safetensors'``).
- Symbolic links to files are followed. Links to folders are followed only with ``follow_links``;
  a link (to a file or a folder) whose target lies outside every audited folder is never followed;
  every folder is identified by (device, inode), so a loop (a link to an ancestor) or a second way
  into the same folder is noticed and not walked again. A file reached by two paths (a hard link,
  a link) is audited once, under the first path in walk order.

Planning groups what was found into units of work. A folder that a folder format claims (a HF
Trainer ``checkpoint-N/``) is one unit; so is every file whose name says it may pull other files
into its model (a sharded index, an ONNX graph with external data, a TF checkpoint index). Those
are read first ("stage A"); the folder's other files ("stage B") wait for them, so that the files a
stage-A model claims (its ``Inventory.files``) are members of that model and never scanned again.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from ckptscan import registry
from ckptscan.folders import MODEL_INDEX, may_hold_copies

VCS_FOLDERS = frozenset({".git", ".hg", ".svn", ".bzr", "CVS", "_darcs"})

# A file whose name ends so may read other files of its folder as part of one model.
CLAIMANT_SUFFIXES = (".index.json", ".onnx", ".index")

# Files beside a model that belong with it in a HF model folder (the registry's policy)
COMPANION_NAMES = registry.COMPANION_NAMES


@dataclass(frozen=True, slots=True)
class WalkOptions:
    """Which files the walk visits: include and exclude patterns, hidden files, symlinks."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: bool = False
    follow_links: bool = False


@dataclass(frozen=True, slots=True)
class FoundFile:
    """A file the walk found: its path, size, and what --index compares to skip it next time."""

    path: str  # as reached: the audited root joined with the names walked
    size: int
    key: str  # absolute and normalized: how claims and aliases compare
    mtime_ns: int = 0  # local files: what --index compares (with the size) to skip unchanged files
    etag: str | None = None  # remote objects: their ETag (or the backend's version), for --index


@dataclass(slots=True)
class Folder:
    """One folder of the walk and the files found in it (or the files named on the command line)."""

    path: str
    files: list[FoundFile] = field(default_factory=list)
    explicit: bool = False  # files named on the command line: no folder-level grouping


@dataclass(slots=True)
class WalkStats:
    """What the walk passed over, for the summary (nothing here is an error)."""

    folders: int = 0
    files: int = 0
    bytes: int = 0
    hidden_skipped: int = 0  # hidden files and folders
    vcs_skipped: int = 0  # version-control folders
    excluded: int = 0  # files and folders matching --exclude, or files matching no --include
    links_not_followed: int = 0  # links to folders, without --follow-links
    links_outside: int = 0  # links whose target lies outside every audited folder: never followed
    link_loops: int = 0  # links to a folder on the current path
    aliases: int = 0  # files or folders already reached by another path
    broken_links: int = 0
    unreadable: list[str] = field(default_factory=list)  # folders that could not be listed, missing roots


def walk(
    roots: Sequence[str], options: WalkOptions, list_remote: Callable[[str], Any] | None = None
) -> tuple[list[Folder], WalkStats]:
    """Every folder (with its files) under ``roots``, in a stable order. Remote roots (``s3://...``)
    are listed by ``list_remote`` (on a Dask worker for a distributed audit)."""
    walker = _Walker(options)
    walker.trees = [os.path.realpath(r) for r in roots if os.path.isdir(r)]
    for root in roots:
        if is_remote(root):
            walker.remote_root(root, list_remote)
        else:
            walker.root(root)
    return walker.folders, walker.stats


def is_remote(path: str) -> bool:
    from ckptscan.scan import is_remote as remote  # answers a local path without importing ckptscan.remote

    return remote(path)


class _Walker:
    def __init__(self, options: WalkOptions) -> None:
        self.options = options
        self.stats = WalkStats()
        self.folders: list[Folder] = []
        self.seen_files: set[tuple[int, int]] = set()
        self.seen_folders: set[tuple[int, int]] = set()
        self.root_key = ""
        self.trees: list[str] = []  # the audited folders, links resolved: links may not lead out of them

    def root(self, root: str) -> None:
        try:
            st = os.stat(root)
        except OSError as e:
            self.stats.unreadable.append(f"{root}: {e.strerror or e}")
            return
        if stat.S_ISDIR(st.st_mode):
            self._walk_tree(root, st)
        elif stat.S_ISREG(st.st_mode):
            # a file named on the command line is audited alone, whatever its siblings
            if self._first_visit(self.seen_files, st):
                self._count_file(st)
                found = FoundFile(root, st.st_size, normalized(root), st.st_mtime_ns)
                self.folders.append(Folder(os.path.dirname(root) or ".", [found], explicit=True))
            else:
                self.stats.aliases += 1
        else:
            self.stats.unreadable.append(f"{root}: not a file or folder")

    def remote_root(self, root: str, list_remote: Callable[[str], Any] | None) -> None:
        """A bucket prefix, a Hub repository, a URL: listed once, grouped by folder like a walk."""
        from ckptscan.errors import CkptscanError
        from ckptscan.remote import list_tree

        try:
            listing = (list_remote or list_tree)(root)
        except CkptscanError as e:
            self.stats.unreadable.append(str(e))
            return
        base = root.rstrip("/")
        folders: dict[str, Folder] = {}
        listed: set[str] = set()  # every folder on the way, as a local walk counts them
        for found in listing.files:
            rel = found.url[len(base) :].lstrip("/") if found.url.startswith(base) else posixpath.basename(found.url)
            parts = rel.split("/") if rel else [posixpath.basename(found.url)]
            if any(self._skip_folder(name, "/".join(parts[: i + 1])) for i, name in enumerate(parts[:-1])):
                continue
            listed.update("/".join(parts[:i]) for i in range(len(parts)))
            if self._skip_file(parts[-1], rel or parts[-1]):
                continue
            self.stats.files += 1
            self.stats.bytes += found.size
            folder_url = posixpath.dirname(found.url) if rel else base
            folder = folders.setdefault(folder_url, Folder(folder_url, explicit=not rel))
            folder.files.append(FoundFile(found.url, found.size, found.url, etag=found.etag))
        self.stats.folders += len(listed)
        self.folders.extend(folders[k] for k in sorted(folders))

    def _walk_tree(self, root: str, st: os.stat_result) -> None:
        # depth-first, children in name order; a stack, not recursion, so depth is no limit
        self.root_key = normalized(root)
        stack: list[tuple[str, str, os.stat_result, frozenset[tuple[int, int]]]] = [(root, "", st, frozenset())]
        while stack:
            path, rel, folder_st, ancestors = stack.pop()
            subfolders = self._list_folder(path, rel, folder_st, ancestors)
            stack.extend(reversed(subfolders))

    def _list_folder(
        self, path: str, rel: str, st: os.stat_result, ancestors: frozenset[tuple[int, int]]
    ) -> list[tuple[str, str, os.stat_result, frozenset[tuple[int, int]]]]:
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            self.stats.link_loops += 1
            return []
        if not self._first_visit(self.seen_folders, st):
            self.stats.aliases += 1
            return []
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            self.stats.unreadable.append(f"{path}: {e.strerror or e}")
            return []
        self.stats.folders += 1
        folder = Folder(path)
        subfolders = []
        inside = ancestors | {key}
        for entry in entries:
            name = entry.name
            child_rel = f"{rel}/{name}" if rel else name
            try:
                is_link = entry.is_symlink()
                target = os.stat(entry.path) if is_link else entry.stat(follow_symlinks=False)
            except OSError:
                self.stats.broken_links += 1
                continue
            if is_link and not self._inside(entry.path):
                self.stats.links_outside += 1
                continue
            if stat.S_ISDIR(target.st_mode):
                if self._skip_folder(name, child_rel):
                    continue
                if is_link and not self.options.follow_links:
                    self.stats.links_not_followed += 1
                    continue
                subfolders.append((entry.path, child_rel, target, inside))
            elif stat.S_ISREG(target.st_mode):
                if self._skip_file(name, child_rel):
                    continue
                if not self._first_visit(self.seen_files, target):
                    self.stats.aliases += 1
                    continue
                self._count_file(target)
                found = os.path.join(self.root_key, child_rel) if os.sep == "/" else normalized(entry.path)
                folder.files.append(FoundFile(entry.path, target.st_size, found, target.st_mtime_ns))
        if folder.files:
            self.folders.append(folder)
        return subfolders

    def _inside(self, path: str) -> bool:
        """Whether a link's final target lies inside one of the audited folders."""
        real = os.path.realpath(path)
        return any(real == tree or real.startswith(tree.rstrip(os.sep) + os.sep) for tree in self.trees)

    def _skip_folder(self, name: str, rel: str) -> bool:
        if name in VCS_FOLDERS:
            self.stats.vcs_skipped += 1
            return True
        if name.startswith(".") and not self.options.hidden:
            self.stats.hidden_skipped += 1
            return True
        if _matches(self.options.exclude, name, rel):
            self.stats.excluded += 1
            return True
        return False

    def _skip_file(self, name: str, rel: str) -> bool:
        if name.startswith(".") and not self.options.hidden:
            self.stats.hidden_skipped += 1
            return True
        if _matches(self.options.exclude, name, rel) or (
            self.options.include and not _matches(self.options.include, name, rel)
        ):
            self.stats.excluded += 1
            return True
        return False

    def _count_file(self, st: os.stat_result) -> None:
        self.stats.files += 1
        self.stats.bytes += st.st_size

    @staticmethod
    def _first_visit(seen: set[tuple[int, int]], st: os.stat_result) -> bool:
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return False
        seen.add(key)
        return True


def _matches(patterns: Iterable[str], name: str, rel: str) -> bool:
    return any(fnmatchcase(rel if "/" in p else name, p.strip("/")) for p in patterns)


# -- planning ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Companion:
    """A companion file of a model's folder (config, tokenizer...), listed in the model's record."""

    key: str
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class Unit:
    """One thing a worker reads: a file (sniffed first) or a folder that a folder format claims."""

    id: int
    kind: str  # "file" or "folder"
    path: str
    key: str  # normalized path (see FoundFile.key)
    folder: str
    group: int  # index of its folder listing in the walk
    size: int  # the file's size; for a folder unit, its files' sizes together
    stage: str  # "A": may claim other files of its folder; "B": read once the folder's A units are done
    companions: tuple[Companion, ...] = ()  # HF companion files of its folder, by name


@dataclass(slots=True)
class Plan:
    """The units to read, and the stage-B units each folder holds back until its stage-A units are done."""

    units: list[Unit]
    # folder listing (group) -> ids of its stage-B units, released when its stage-A units are done
    waiting: dict[int, list[int]]
    pending_a: dict[int, int]


def plan(folders: Sequence[Folder]) -> Plan:
    the_plan = Plan([], {}, {})
    models = _folder_models(folders)
    pipelines = {folder.path: group for group, folder in enumerate(folders) if folder.path in models and
                 any(os.path.basename(f.path) == MODEL_INDEX for f in folder.files)}  # fmt: skip
    for group, folder in enumerate(folders):
        owner = next((g for root, g in pipelines.items() if _under(folder.path, root)), None)
        if owner is not None:
            _plan_component(the_plan, owner, folder)
        else:
            _plan_folder(the_plan, group, folder, one_model=folder.path in models)
    return the_plan


def _plan_component(the_plan: Plan, pipeline_group: int, folder: Folder) -> None:
    """A diffusers pipeline's subfolder: its files wait for the pipeline, which reads its components
    (as `ckptscan DIR` does); the files it did not read are then read one by one."""
    waiting = the_plan.waiting.setdefault(pipeline_group, [])
    for found in folder.files:
        unit_id = len(the_plan.units)
        the_plan.units.append(
            Unit(unit_id, "file", found.path, found.key, folder.path, pipeline_group, found.size, "B")
        )
        waiting.append(unit_id)


def _folder_models(folders: Sequence[Folder]) -> set[str]:
    """Folders read as one model, as `ckptscan DIR` reads them (ckptscan.folders), judged from
    names only: a diffusers pipeline (it has model_index.json) and, as a candidate the worker
    confirms, a folder with Hugging Face weights in two formats."""
    models = set()
    for folder in folders:
        if folder.explicit or is_remote(folder.path):
            continue
        names = {os.path.basename(f.path) for f in folder.files}
        if MODEL_INDEX in names or may_hold_copies(names):
            models.add(folder.path)
    return models


def _under(path: str, root: str) -> bool:
    return path.startswith(root.rstrip(os.sep) + os.sep)


def _plan_folder(the_plan: Plan, group: int, folder: Folder, *, one_model: bool = False) -> None:
    companions = () if folder.explicit else companions_of(folder)

    def add(kind: str, found: FoundFile, stage: str) -> int:
        unit_id = len(the_plan.units)
        the_plan.units.append(
            Unit(unit_id, kind, found.path, found.key, folder.path, group, found.size, stage, companions)
        )
        return unit_id

    remote = is_remote(folder.path)  # folder formats (Trainer checkpoints) are recognized locally only
    folder_format = None if folder.explicit or remote else registry.detect_folder(Path(folder.path))
    if folder_format is not None or one_model:
        whole = FoundFile(folder.path, sum(f.size for f in folder.files), normalized(folder.path))
        a_ids = [add("folder", whole, "A")]
        b_files = list(folder.files)
    else:
        claimants = [f for f in folder.files if f.path.lower().endswith(CLAIMANT_SUFFIXES)]
        a_ids = [add("file", f, "A") for f in claimants]
        claimed_by_name = {f.path for f in claimants}
        b_files = [f for f in folder.files if f.path not in claimed_by_name]
    stage = "B" if a_ids else "A"  # without claimants there is nothing to wait for
    b_ids = [add("file", f, stage) for f in b_files]
    if a_ids and b_ids:
        the_plan.waiting.setdefault(group, []).extend(b_ids)  # a pipeline's components may be there
        the_plan.pending_a[group] = len(a_ids)


# one compiled pattern: matching 14 globs one by one per file was most of the planning time
_COMPANION = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in COMPANION_NAMES))


def companions_of(folder: Folder) -> tuple[Companion, ...]:
    return tuple(
        Companion(f.key, os.path.basename(f.path), f.size)
        for f in folder.files
        if registry.is_companion(os.path.basename(f.path))
    )


def normalized(path: str) -> str:
    """One spelling per path, so that claims and walked paths compare (URLs stay as they are)."""
    if is_remote(path):
        return path.rstrip("/")
    return os.path.normpath(os.path.abspath(path))
