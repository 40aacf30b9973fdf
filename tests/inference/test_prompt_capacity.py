"""The served prompt cap follows the audio input geometry: 30 s of user audio at paper scale is 1,500 positions."""

import dataclasses

import pytest

from deeptalk.config import load_config
from deeptalk.inference.config import PROMPT_OVERHEAD, prompt_capacity


@pytest.mark.parametrize(("profile", "upload_positions"), [("tiny", 100), ("paper", 1500)])
def test_each_profile_holds_a_maximal_upload_and_its_history(tmp_path, profile, upload_positions):
    cfg = load_config(tmp_path / "params.yaml", profile=profile, root=tmp_path)
    seconds = cfg.service.max_upload_seconds
    assert cfg.audio_input.n_positions(int(seconds * 16000)) == upload_positions
    assert prompt_capacity(cfg.service, cfg.audio_input) == upload_positions + PROMPT_OVERHEAD + 512


def test_an_explicit_cap_too_small_for_one_upload_is_refused(tmp_path):
    cfg = load_config(tmp_path / "params.yaml", profile="paper", root=tmp_path)
    with pytest.raises(ValueError, match=r"max_prompt_positions 512 cannot hold one 30.0 s upload \(1500 positions"):
        prompt_capacity(dataclasses.replace(cfg.service, max_prompt_positions=512), cfg.audio_input)
    assert prompt_capacity(dataclasses.replace(cfg.service, max_prompt_positions=4096), cfg.audio_input) == 4096
