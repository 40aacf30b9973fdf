import json

import numpy as np
import pytest

from deeptalk.evaluation.training_logs import (
    find_stage_logs,
    loss_records,
    mean_expert_load,
    read_records,
    training_curves,
)


def _record(step, loss, speech_n, speech_share, text_n=0, text_share=None):
    load = {"speech": {"positions": speech_n, "share": speech_share}}
    if text_share is not None:
        load["text"] = {"positions": text_n, "share": text_share}
    return {"step": step, "lr": 1e-3, "loss": loss, "stream_losses": {"text": loss / 2, "audio_0": loss},
            "tokens_per_s": 1.0, "expert_load": load}


def _write(path, records, garbage=False):
    path.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in records] + (['{"step": 3, "lo'] if garbage else [])
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_find_read_and_flatten(tmp_path):
    models = tmp_path / "models"
    _write(models / "base", [_record(10, 4.0, 0, [[0.5, 0.5]])])
    _write(models / "stages" / "s3", [_record(10, 2.0, 1, [[1.0, 0.0]])])
    _write(models / "stages" / "fixed" / "phases" / "s2a", [_record(10, 3.0, 1, [[1.0, 0.0]])], garbage=True)
    _write(models / "stages" / "fixed", [_record(10, 2.5, 1, [[0.0, 1.0]])])
    found = find_stage_logs(models)
    assert list(found) == ["text_pretrain", "s3", "fixed/s2a", "fixed"]  # pipeline order, then baselines
    records = read_records(found["fixed/s2a"])
    assert len(records) == 1  # the half-written line is skipped
    assert loss_records(records) == [{"step": 10, "loss": 3.0, "loss_text": 1.5, "loss_audio_0": 3.0}]
    curves, loads = training_curves(models)
    assert set(curves) == set(found) and loads["text_pretrain"] == {}  # no speech positions: nothing to show


def test_mean_expert_load_weighted_by_positions():
    records = [_record(1, 1.0, 1, [[1.0, 0.0]], 2, [[0.5, 0.5]]), _record(2, 1.0, 3, [[0.0, 1.0]], 0, [[1, 0]])]
    loads = mean_expert_load(records)
    np.testing.assert_allclose(loads["speech"], [[0.25, 0.75]])
    np.testing.assert_allclose(loads["text"], [[0.5, 0.5]])  # the record with 0 text positions is ignored
    with pytest.raises(ValueError, match="shape changed"):
        mean_expert_load([_record(1, 1.0, 1, [[1.0, 0.0]]), _record(2, 1.0, 1, [[1.0, 0.0, 0.0]])])
