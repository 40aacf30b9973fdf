"""A fresh copy of the project (what a clone would hold) to run DVC / Prefect / the CLI in, isolated."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# Small data and a small codebook so the data chain runs in about a minute on 2 cores.
FAST_PARAMS = {
    "data": {
        "counts": {"asr": [12, 3, 4], "tts": [6, 2, 3], "aqa": [10, 2, 4], "tqa": [10, 2, 6], "rqa": [10, 2, 4]},
        "max_facts": 150,
    },
    "codec": {"codebook_size": 256, "kmeans_iters": 4},
}


def clone_project(dest: Path, params_update: dict | None = None) -> Path:
    """Copy tracked + untracked-but-not-ignored files (a clone of the working tree), then apply params."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in (params_update or {}).items():
        params[section] = {**params.get(section, {}), **values} if isinstance(values, dict) else values
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def repo_project(dest: Path, params_update: dict | None = None) -> Path:
    """:func:`clone_project` made a git repository of its own (DVC records ``dvc.lock`` in one) with the
    checkout's ``.venv`` linked in, as ``make setup`` would leave it: the README's commands run there as written,
    on the working tree's code."""
    clone_project(dest, params_update)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"]):
        subprocess.run(["git", *args], cwd=dest, check=True, capture_output=True)
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


def copy_project(src: Path, dest: Path) -> Path:
    """A copy of a trained project (outputs, state of record, DVC cache): a test that changes it leaves the
    shared one as it was. Content digests make the copy as current as the original."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def env_for(project: Path) -> dict:
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "PREFECT_HOME": str(project / ".prefect"),
        "PYTHONPATH": str(project),
        "DEEPTALK_THREADS": os.environ.get("DEEPTALK_THREADS", "1"),
    }


def run(cmd: list[str], project: Path, timeout: float = 900, extra_env: dict | None = None,
        check: bool = True) -> str:
    env = {**env_for(project), **(extra_env or {})}
    result = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout + result.stderr


def tree_hashes(root: Path, *dirs: str) -> dict[str, str]:
    hashes = {}
    for rel in dirs:
        base = root / rel
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for file in files:
            hashes[str(file.relative_to(root))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return hashes
