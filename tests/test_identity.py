"""Content identity: one digest for files, trees and code, the same wherever a record, gate or manifest asks."""

from __future__ import annotations

import os
import shutil

from deeptalk.evaluation.gates import model_digest
from deeptalk.identity import MISSING, code_digest, code_files, file_digest, file_manifest, json_digest, tree_digest


def _tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"alpha")
    (root / "sub" / "b.txt").write_text("beta")
    return root


def test_a_copied_tree_keeps_its_digest_and_any_edit_or_rename_changes_it(tmp_path):
    a = _tree(tmp_path / "a")
    shutil.copytree(a, tmp_path / "b")
    assert tree_digest(a) == tree_digest(tmp_path / "b") == model_digest(a)
    before = tree_digest(a)
    (a / "sub" / "b.txt").write_text("Beta")  # same size, other bytes
    assert tree_digest(a) != before
    (a / "sub" / "b.txt").write_text("beta")
    assert tree_digest(a) == before
    os.rename(a / "a.bin", a / "c.bin")
    assert tree_digest(a) != before


def test_caches_and_excluded_directories_are_not_content(tmp_path):
    a = _tree(tmp_path / "a")
    before = tree_digest(a)
    (a / "__pycache__").mkdir()
    (a / "__pycache__" / "x.pyc").write_bytes(b"cache")
    (a / "phases" / "s2a").mkdir(parents=True)
    (a / "phases" / "s2a" / "w.bin").write_bytes(b"weights")
    assert tree_digest(a, exclude=("phases",)) == before
    assert tree_digest(a) != before
    assert tree_digest(tmp_path / "nothing") == MISSING


def test_a_file_rewritten_in_place_is_hashed_again(tmp_path):
    """The memo is keyed by size, mtime and inode: a rewrite is never served a stale digest."""
    f = tmp_path / "f"
    f.write_bytes(b"one")
    first = file_digest(f)
    f.write_bytes(b"two")
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))
    assert file_digest(f) == file_digest(f, memo=False) != first


def test_file_manifest_lists_every_file_under_the_paths(tmp_path):
    _tree(tmp_path / "a")
    listed = file_manifest(tmp_path, ["a"])
    assert listed == {"a/a.bin": file_digest(tmp_path / "a" / "a.bin"),
                      "a/sub/b.txt": file_digest(tmp_path / "a" / "sub" / "b.txt")}
    assert json_digest({"x": 1, "y": [1, 2]}) == json_digest({"y": [1, 2], "x": 1})


def test_code_follows_imports_transitively():
    files = code_files("deeptalk.steps.train_stage")
    assert {"deeptalk/steps/train_stage.py", "deeptalk/training/runner.py", "deeptalk/training/loop.py",
            "deeptalk/model/speech_lm.py", "deeptalk/tokens.py", "deeptalk/identity.py"} <= set(files)
    assert "deeptalk/serving/http.py" not in files
    assert code_digest("deeptalk.identity") != code_digest("deeptalk.tokens")
