"""Step files through a DVC remote: two project directories that share nothing but the remote."""

import subprocess
import sys
from pathlib import Path

import pytest

from flows.exchange import Exchange, data_paths

DVC = str(Path(sys.executable).with_name("dvc"))


def _project(path: Path, remote: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=path, check=True)
    subprocess.run([DVC, "remote", "add", "-d", "store", str(remote)], cwd=path, check=True)
    return path


def test_inputs_there_outputs_back(tmp_path):
    remote = tmp_path / "remote"
    here, there = _project(tmp_path / "server", remote), _project(tmp_path / "worker", remote)
    (here / "data" / "seq").mkdir(parents=True)
    (here / "data" / "seq" / "a.bin").write_bytes(b"\x00" * 1000)
    (here / "data" / "seq" / "b.txt").write_text("b")
    (here / "params.yaml").write_text("profile: tiny\n")
    sender, worker = Exchange(here), Exchange(there)
    deps = sender.push(data_paths(["deeptalk/model", "data/seq", "params.yaml"]))
    assert sorted(deps) == ["data/seq/a.bin", "data/seq/b.txt", "params.yaml"]
    assert sender.push(["data/seq"]) == {k: v for k, v in deps.items() if k.startswith("data/")}  # nothing resent
    (there / "models" / "out").mkdir(parents=True)
    (there / "models" / "out" / "stale.bin").write_text("from an older run")
    assert worker.pull(deps) == 3 and (there / "data" / "seq" / "b.txt").read_text() == "b"
    (there / "models" / "out" / "w.bin").write_bytes(b"weights")
    (there / "models" / "out" / "stale.bin").unlink()
    outs = worker.push(["models/out"])
    (here / "models" / "out").mkdir(parents=True)
    (here / "models" / "out" / "stale.bin").write_text("old")
    assert sender.pull(outs, clear=["models/out"]) == 1
    assert sorted(p.name for p in (here / "models" / "out").iterdir()) == ["w.bin"]


def test_a_project_without_a_remote_is_told_what_to_configure(tmp_path):
    with pytest.raises(ValueError, match="not a DVC project"):
        Exchange(tmp_path)
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    with pytest.raises(ValueError, match="dvc remote add"):
        Exchange(tmp_path)
