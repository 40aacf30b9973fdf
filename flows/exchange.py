"""Step inputs and outputs travel between machines through the project's DVC remote, never through a shared
working directory.

A step sent to another machine (the ``gpu`` work pool) gets a *manifest* of its inputs: every file under the
step's data dependencies (``StepSpec.deps`` minus code, which the worker has installed) and the params file,
each named by its SHA-256. The files are stored content-addressed on the DVC remote
(``<remote>/deeptalk-exchange/sha256/ab/cdef…``): what the remote already holds is not sent again. The worker
pulls the manifest into its own project directory, runs the step, and leaves its summary and the manifest of
its outputs on the remote (``deeptalk-exchange/runs/<flow run id>.json``: the worker's own result storage is
not reachable from the sender), which the sender pulls.

The remote is the one ``dvc remote add -d`` configured (``.dvc/config``), with its credentials and endpoint,
through DVC's own filesystem classes (S3, a local directory, …).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from deeptalk.identity import Manifest, file_digest, file_manifest, tree_files

log = logging.getLogger(__name__)

PREFIX = "deeptalk-exchange"
CODE_PREFIXES = ("deeptalk/",)  # code dependencies come with the worker's installed package


def _files(root: Path, rels: Iterable[str]) -> list[str]:
    return [p.relative_to(root).as_posix() for rel in rels for p in tree_files(root / rel)]


def data_paths(paths: Iterable[str]) -> list[str]:
    """The paths that must travel: data and models, not the project's code."""
    return [p for p in paths if not p.startswith(CODE_PREFIXES)]


class Exchange:
    """Content-addressed file exchange on a DVC remote; ``root`` is this machine's project directory."""

    def __init__(self, root: str | Path, remote: str | None = None):
        from dvc.exceptions import NotDvcRepoError
        from dvc.repo import Repo

        self.root = Path(root).resolve()
        try:
            repo = Repo(str(self.root))
        except NotDvcRepoError as err:
            raise ValueError(f"{self.root} is not a DVC project: steps on other machines exchange their inputs "
                             "and outputs through a DVC remote (`dvc init`, `dvc remote add -d NAME URL`)") from err
        try:
            dvc_remote = repo.cloud.get_remote(remote, "exchange")
        except Exception as err:  # NoRemoteError and friends: say what to configure
            raise ValueError(f"no DVC remote {remote or '(default)'} in {self.root}: steps on other machines "
                             f"exchange files through it (`dvc remote add -d NAME URL`): {err}") from err
        self.remote_name = dvc_remote.name
        self.fs = dvc_remote.fs
        self.base = self.fs.join(dvc_remote.path, PREFIX)

    def _object(self, sha: str) -> str:
        return self.fs.join(self.base, "sha256", sha[:2], sha[2:])

    def put_record(self, key: str, record: dict) -> None:
        """A small JSON record (a step's answer: its summary and output manifest) under ``runs/<key>.json``."""
        target = self.fs.join(self.base, "runs", f"{key}.json")
        self.fs.makedirs(self.fs.parent(target), exist_ok=True)
        with self.fs.open(target, "w") as handle:
            handle.write(json.dumps(record, default=str))

    def get_record(self, key: str) -> dict:
        with self.fs.open(self.fs.join(self.base, "runs", f"{key}.json"), "r") as handle:
            return json.loads(handle.read())

    def push(self, rels: Iterable[str]) -> Manifest:
        """Store the files under ``rels`` on the remote (those it lacks); their manifest."""
        listed = file_manifest(self.root, rels)
        sent = 0
        for rel, sha in listed.items():
            target = self._object(sha)
            if not self.fs.exists(target):
                self.fs.makedirs(self.fs.parent(target), exist_ok=True)
                self.fs.put_file(str(self.root / rel), target)
                sent += 1
        log.info("exchange: %d files listed, %d sent to remote %s", len(listed), sent, self.remote_name)
        return listed

    def pull(self, manifest: Manifest, clear: Iterable[str] = ()) -> int:
        """Make the project hold exactly ``manifest``'s files under the directories in ``clear`` (others are
        removed first, so a stale output cannot survive) and at every listed path; returns files fetched."""
        keep = set(manifest)
        for rel in _files(self.root, clear):
            if rel not in keep:
                (self.root / rel).unlink()
        fetched = 0
        for rel, sha in manifest.items():
            path = self.root / rel
            if path.is_file() and file_digest(path) == sha:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            self.fs.get_file(self._object(sha), str(tmp))
            if file_digest(tmp, memo=False) != sha:
                tmp.unlink()
                raise OSError(f"exchange: {rel} arrived corrupted from remote {self.remote_name}")
            os.replace(tmp, path)
            fetched += 1
        log.info("exchange: %d of %d files fetched from remote %s", fetched, len(manifest), self.remote_name)
        return fetched
