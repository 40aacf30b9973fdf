"""Content identity: the one place where files, directory trees and code are hashed (sha256).

Every record that says "computed from exactly this" uses it: the state of record (``deeptalk.steps.record``),
the trainer's fingerprint of a finished stage, the gate's digest of the model it judged, resumable checkpoint
manifests, the file exchange between machines and compare's unit keys. One definition means a tree hashes the
same wherever it is checked: the digest a gate wrote is the digest packaging recomputes.

Standard library only, so any layer may import it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the directory holding deeptalk/ (a checkout or site-packages)
IGNORED_PARTS = frozenset({"__pycache__", ".ipynb_checkpoints"})  # caches, never content
MISSING = "missing"  # tree_digest of a path that does not exist
_BLOCK = 1 << 20

Manifest = dict[str, str]  # relative path → sha256 of the file


def bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_digest(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (sorted keys; non-JSON values by ``str``)."""
    return bytes_digest(json.dumps(value, sort_keys=True, default=str).encode())


def _read_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


_MEMO: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256, within this process


def file_digest(path: str | Path, memo: bool = True) -> str:
    """sha256 of a file's bytes. With ``memo`` it is remembered while the file's size, mtime and inode stay (a
    flow run hashes ``data/raw`` for several steps; any rewrite changes the mtime); ``memo=False`` re-reads
    (a check against bit rot or a bad copy)."""
    path = Path(path)
    if not memo:
        return _read_digest(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _MEMO:
        _MEMO[key] = _read_digest(path)
    return _MEMO[key]


def _ignored(rel: Path) -> bool:
    return bool(IGNORED_PARTS & set(rel.parts)) or rel.suffix == ".pyc"


def tree_files(path: str | Path, exclude: Iterable[str] = ()) -> list[Path]:
    """Files under ``path`` in sorted order (``path`` itself when it is a file), caches left out and any file
    under a directory named in ``exclude``."""
    path, skip = Path(path), frozenset(exclude)
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.rglob("*") if p.is_file() and not _ignored(p.relative_to(path))
                  and not skip & set(p.relative_to(path).parts[:-1]))


def file_manifest(root: str | Path, rels: Iterable[str], memo: bool = True) -> Manifest:
    """``{path relative to root: sha256}`` of every file under the root-relative paths ``rels``."""
    root = Path(root)
    out: Manifest = {}
    for rel in rels:
        for file in tree_files(root / rel):
            out[file.relative_to(root).as_posix()] = file_digest(file, memo)
    return out


def tree_digest(path: str | Path, exclude: Iterable[str] = ()) -> str:
    """One digest of a file or a directory tree: every file's path relative to ``path`` and its sha256 (a
    copied or moved tree keeps its digest; a renamed or edited file changes it); :data:`MISSING` when nothing is
    there. ``exclude`` names sub-directories that are not part of the content (resumable checkpoints)."""
    path = Path(path)
    if not path.exists():
        return MISSING
    if path.is_file():
        return file_digest(path)
    digest = hashlib.sha256()
    for file in tree_files(path, exclude):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_digest(file)}\n".encode())
    return digest.hexdigest()


# ---- code --------------------------------------------------------------------------------------------------
def _module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for candidate in (PACKAGE_ROOT / rel.with_suffix(".py"), PACKAGE_ROOT / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=4096)
def _parsed_imports(file: str, module: str, size: int, mtime_ns: int) -> frozenset[str]:
    """``deeptalk`` modules imported anywhere in ``file`` (function-level imports included); parsed once per
    file version (size and mtime are part of the key)."""
    path = Path(file)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return frozenset(m for m in found if m == "deeptalk" or m.startswith("deeptalk."))


def code_files(module: str) -> tuple[str, ...]:
    """Root-relative source files of ``module`` and every ``deeptalk`` module it imports, transitively (the
    static import graph: what the module can run)."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        st = path.stat()
        todo.extend(_parsed_imports(str(path), name, st.st_size, st.st_mtime_ns) - set(seen))
    return tuple(sorted({p.relative_to(PACKAGE_ROOT).as_posix() for p in seen.values()}))


def code_digests(module: str, extra_dirs: tuple[str, ...] = ()) -> Manifest:
    """sha256 of every source file ``module`` imports (:func:`code_files`) and of the files under ``extra_dirs``
    (root-relative: data the code reads, e.g. ``configs/deepspeed``)."""
    files = list(code_files(module))
    for extra in extra_dirs:
        files += [p.relative_to(PACKAGE_ROOT).as_posix() for p in tree_files(PACKAGE_ROOT / extra)]
    return {rel: file_digest(PACKAGE_ROOT / rel) for rel in files}


def code_digest(*modules: str, extra_dirs: tuple[str, ...] = ()) -> str:
    """One digest of the code of ``modules`` (union of their :func:`code_digests`)."""
    return json_digest({rel: sha for m in modules for rel, sha in code_digests(m, extra_dirs).items()})
