"""One tiny project trained by `python -m flows run` and shared by the tests of a trained, packaged and served
project (session-scoped: the whole chain runs once per test session). They live in one file,
tests/e2e/test_pipeline.py, so one test worker runs them all (``make test``: pytest-xdist, ``--dist loadfile``).
A test that changes the project works on a copy (``tests.e2e._project.copy_project``)."""

from __future__ import annotations

import pytest

from tests.e2e._project import FAST_PARAMS, repo_project, run

SHORT = {"steps": 12, "batch_size": 4}
HEARS = {"steps": 200, "batch_size": 8}  # S1 trains the CTC head alone (cheap): enough that it hears words
SPEAKS = {"steps": 60, "batch_size": 8}  # enough that the model emits codes before EOA (the check needs /tts audio)
FAST_TRAINING = {"training": {**{stage: SHORT for stage in ("text_pretrain", "s2b", "plain")}, "s1": HEARS,
                              "s2a": SPEAKS, "s3": SPEAKS}}
# a 12-step model is not judged on quality here: the gates are wide open (test_pipeline makes one unreachable)
OPEN_GATES = {"gates": {"max_text_drop_pct": 1e6, "max_asr_wer": 1e6, "max_tts_wer": 1e6,
                        "max_first_audio_ms": 1e7, "max_rtf": 1e6, "min_spoken_over_typed": None,
                        "min_distinct_answers": None, "max_speech_wer_own_text": None}}
# the service check asks at least 10 held-out spoken questions, one per expected answer
SPOKEN = {"data": {**FAST_PARAMS["data"], "counts": {**FAST_PARAMS["data"]["counts"], "aqa": [10, 2, 12]}},
          "evaluation": {"distinct_questions": 10}}
SHARED_PARAMS = {**FAST_PARAMS, **FAST_TRAINING, **OPEN_GATES, **SPOKEN}


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory):
    """``(project, console output, env)`` of `python -m flows run` on a fresh copy of the working tree."""
    root = tmp_path_factory.mktemp("trained")
    env = {"BENTOML_HOME": str(root / "bentoml")}
    project = repo_project(root / "project", SHARED_PARAMS)
    out = run(["python", "-m", "flows", "run"], project, extra_env=env, timeout=1500)
    return project, out, env
