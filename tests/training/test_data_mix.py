"""The runner's data mix: batches are a pure function of the step and follow the task weights."""

from __future__ import annotations

from collections import Counter

import pytest

from deeptalk.training.runner import MixedBatches
from deeptalk.training.stages import DataMix


class FakeDataset:
    def __init__(self, tasks):
        self.task_of = list(tasks)

    def __len__(self):
        return len(self.task_of)


def test_batches_depend_only_on_the_step_and_follow_weights():
    ds = FakeDataset(["aqa"] * 50 + ["tts"] * 50 + ["asr"] * 10)
    mix = DataMix((("aqa", 3.0), ("tts", 1.0)))
    a, b = MixedBatches(ds, mix, 8, seed=1), MixedBatches(ds, mix, 8, seed=1)
    assert [a.indices(s) for s in (5, 0, 3)] == [b.indices(s) for s in (5, 0, 3)]
    assert a.indices(1) != a.indices(2)
    picks = Counter(ds.task_of[i] for s in range(200) for _, i in a.indices(s))
    assert set(picks) == {"aqa", "tts"}
    assert 2.4 < picks["aqa"] / picks["tts"] < 3.6
    epochs = [a.indices(s)[0][0] for s in (0, 13, 14, 30)]
    assert epochs == [0, 0, 1, 2], "the packing epoch advances every len(dataset) samples"


def test_missing_task_and_bad_mix_raise():
    with pytest.raises(ValueError, match="no training samples"):
        MixedBatches(FakeDataset(["aqa"]), DataMix((("aqa", 1.0), ("rqa", 1.0))), 2, 0)
    with pytest.raises(ValueError, match="unknown task"):
        DataMix((("speech", 1.0),))
    with pytest.raises(ValueError, match="positive weights"):
        DataMix((("aqa", 0.0),))
