import dataclasses

import pytest

from deeptalk.codec.config import CodecConfig


@pytest.mark.parametrize("profile", ["small", "paper"])
def test_profiles_share_snac_geometry(profile):
    cfg = CodecConfig.for_profile(profile)
    assert cfg.n_streams == 7
    assert cfg.codebook_size == 4096
    assert cfg.frames_per_second == pytest.approx(11.71875)
    assert cfg.kind == ("snac" if profile == "paper" else "embedded")


def test_tiny_codebooks_are_sized_to_its_data():
    cfg = CodecConfig.for_profile("tiny")
    assert (cfg.kind, cfg.level_strides, cfg.codebook_size) == ("embedded", (2, 1), 1024)
    assert cfg.n_streams == 3 and cfg.frames_per_second == pytest.approx(23.4375)
    assert cfg.chunk_frames % cfg.frames_per_coarse == 0


def test_paper_profile_reads_a_local_checkpoint():
    assert CodecConfig.for_profile("paper").checkpoint == "checkpoints/snac_24khz"


def test_unknown_profile():
    with pytest.raises(ValueError, match="profile"):
        CodecConfig.for_profile("huge")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "opus"}, "kind"),
        ({"level_strides": (4, 3, 1)}, "level_strides"),
        ({"level_strides": (4, 2)}, "level_strides"),
        ({"n_fft": 1024}, "n_fft"),
        ({"chunk_frames": 6}, "chunk_frames"),
        ({"codebook_size": 0}, "codebook_size"),
        ({"lookahead_frames": 1}, "lookahead"),
        ({"kind": "snac"}, "checkpoint"),
        ({"phase_init": "zero"}, "phase_init"),
    ],
)
def test_invalid_settings(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CodecConfig(), **change)


def test_other_level_layouts_count_streams():
    assert CodecConfig(level_strides=(8, 4, 2, 1), chunk_frames=8).n_streams == 15
