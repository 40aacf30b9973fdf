import numpy as np
import pytest

from deeptalk.codec.base import check_codes, check_wav, levels_to_rows, rows_to_levels


def test_rows_round_trip_in_snac_order():
    levels = [np.arange(3), np.arange(100, 106), np.arange(200, 212)]
    rows = levels_to_rows(levels, (4, 2, 1))
    assert rows.shape == (7, 3)
    assert rows[:, 0].tolist() == [0, 100, 101, 200, 201, 202, 203]  # one column = one coarse frame
    for a, b in zip(rows_to_levels(rows, (4, 2, 1)), levels, strict=True):
        np.testing.assert_array_equal(a, b)


def test_rows_reject_inconsistent_levels():
    with pytest.raises(ValueError, match="codes per frame"):
        levels_to_rows([np.arange(3), np.arange(5), np.arange(12)], (4, 2, 1))


def test_check_wav_converts_pcm_and_resamples():
    pcm = (np.sin(np.arange(1600) / 5) * 20000).astype(np.int16)
    out = check_wav(pcm, 16000, 24000)
    assert out.dtype == np.float32 and len(out) == 2400 and np.abs(out).max() <= 1.0


def test_check_wav_accepts_a_single_channel_column():
    assert check_wav(np.zeros((100, 1), np.float32), 8000, 8000).shape == (100,)


def test_check_wav_rejects_infinite():
    with pytest.raises(ValueError, match="infinite"):
        check_wav(np.array([0.0, np.inf]), 16000, 16000)


def test_check_codes_accepts_empty_time_axis():
    assert check_codes(np.zeros((7, 0), np.int64), 7, 16).shape == (7, 0)
