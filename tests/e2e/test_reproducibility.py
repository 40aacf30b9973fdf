"""`dvc repro` and the Prefect flow run the same step functions and write byte-identical data artifacts."""

import pytest

from tests.e2e._project import FAST_PARAMS, clone_project, run, tree_hashes

DATA_STEPS = ["generate_data", "validate_data", "fit_codec", "prepare_encoder", "encode", "pack"]
DETERMINISTIC_OUTS = ("data/raw", "data/validated", "data/processed", "data/sequences")


@pytest.mark.slow
def test_dvc_repro_and_prefect_flow_agree(tmp_path):
    dvc_dir = clone_project(tmp_path / "dvc", FAST_PARAMS)
    run(["git", "init", "-q"], dvc_dir)
    run(["dvc", "init", "-q"], dvc_dir)
    first = run(["dvc", "repro", "pack"], dvc_dir)
    for step in DATA_STEPS:
        assert f"Running stage '{step}'" in first
    second = run(["dvc", "repro", "pack"], dvc_dir)
    assert "Running stage" not in second, second

    flow_dir = clone_project(tmp_path / "flow", FAST_PARAMS)
    run(["python", "-m", "deeptalk.flows.pipeline", "--stages", ",".join(DATA_STEPS)], flow_dir)
    assert tree_hashes(flow_dir, *DETERMINISTIC_OUTS) == tree_hashes(dvc_dir, *DETERMINISTIC_OUTS)

    # an unchanged step is a cache hit: nothing is rewritten on the second flow run
    stamps = {p: p.stat().st_mtime_ns for p in (flow_dir / "data").rglob("*") if p.is_file()}
    log = run(["python", "-m", "deeptalk.flows.pipeline", "--stages", ",".join(DATA_STEPS)], flow_dir)
    assert "Cached" in log, log[-3000:]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
