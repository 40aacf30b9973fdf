"""DVC round trips: push a tracked data directory to an S3 remote (a local moto server) and to a local
directory remote, wipe the cache and the workspace copy, pull, and get identical files back."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests._moto import CREDENTIALS, moto_s3

DVC = str(Path(sys.executable).with_name("dvc"))


def _run(repo: Path, *args: str, env: dict | None = None) -> str:
    proc = subprocess.run(args, cwd=repo, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def repo(tmp_path):
    """A git + DVC repo with ``data/`` (text and binary files) tracked by ``dvc add``."""
    repo = tmp_path / "repo"
    data = repo / "data"
    (data / "audio").mkdir(parents=True)
    (data / "manifest.csv").write_text("id,text\nu1,hello\nu2,world\n")
    for i in range(3):
        (data / "audio" / f"u{i}.bin").write_bytes(hashlib.sha256(str(i).encode()).digest() * 100)
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    _run(repo, "git", "init", "-q", env=env)
    _run(repo, DVC, "init", "-q", env=env)
    _run(repo, DVC, "add", "-q", "data", env=env)
    _run(repo, "git", "add", "data.dvc", ".gitignore", ".dvc", env=env)
    _run(repo, "git", "commit", "-q", "-m", "track data", env=env)
    return repo, env


def _wipe_and_pull(repo: Path, env: dict, remote: str) -> None:
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data")
    _run(repo, DVC, "pull", "-q", "-r", remote, env=env)


@pytest.mark.slow
def test_s3_remote_push_wipe_pull(repo):
    repo, env = repo
    before = _digest(repo / "data")
    with moto_s3() as endpoint:
        env = {**env, **CREDENTIALS}
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket="dvc-store")
        _run(repo, DVC, "remote", "add", "s3store", "s3://dvc-store/deeptalk", env=env)
        _run(repo, DVC, "remote", "modify", "s3store", "endpointurl", endpoint, env=env)
        _run(
            repo,
            DVC,
            "remote",
            "modify",
            "--local",
            "s3store",
            "access_key_id",
            CREDENTIALS["AWS_ACCESS_KEY_ID"],
            env=env,
        )
        _run(
            repo,
            DVC,
            "remote",
            "modify",
            "--local",
            "s3store",
            "secret_access_key",
            CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            env=env,
        )
        _run(repo, DVC, "push", "-q", "-r", "s3store", env=env)
        _wipe_and_pull(repo, env, "s3store")
        status = _run(repo, DVC, "status", "-c", "-r", "s3store", env=env)
    assert _digest(repo / "data") == before
    assert "in sync" in status.lower() or status.strip() == ""
    assert "secret_access_key" not in (repo / ".dvc" / "config").read_text()  # credentials stay local


@pytest.mark.slow
def test_local_directory_remote_push_wipe_pull(repo, tmp_path):
    repo, env = repo
    before = _digest(repo / "data")
    store = tmp_path / "store"
    _run(repo, DVC, "remote", "add", "-d", "localstore", str(store), env=env)
    _run(repo, DVC, "push", "-q", "-r", "localstore", env=env)
    assert any(p.is_file() for p in store.rglob("*"))
    _wipe_and_pull(repo, env, "localstore")
    assert _digest(repo / "data") == before
