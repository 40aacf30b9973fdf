"""Step ``prepare_encoder``: writes ``models/encoder`` that ``build_audio_encoder`` loads with the pretrained
weights; a source that does not fit ``audio_input`` fails before the existing encoder is touched."""

import numpy as np
import pytest
import torch

from deeptalk.config import load_config
from deeptalk.model.audio_encoder import build_audio_encoder
from deeptalk.model.whisper_convert import SOURCES, locate_source, read_ct2_model
from deeptalk.steps import get_step, prepare_encoder


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare_encoder")
    cfg = load_config(root / "params.yaml", profile="tiny", root=root)  # tiny profile: tiny.en geometry
    return cfg, prepare_encoder.run(cfg)


def test_step_writes_an_encoder_build_audio_encoder_loads_with_pretrained_weights(project):
    cfg, summary = project
    assert cfg.audio_input.encoder_source == "tiny.en"
    assert cfg.audio_input.encoder_checkpoint == str(cfg.paths.encoder.resolve())
    assert (summary["d_model"], summary["encoder_layers"], summary["encoder_params"]) == (384, 4, 8_208_384)
    encoder = build_audio_encoder(cfg.audio_input)
    ct2 = read_ct2_model([locate_source("tiny.en") / "model.bin"]).variables
    pairs = (("conv1.weight", "encoder/conv1/weight"), ("layer_norm.bias", "encoder/layer_norm/beta"),
             ("layers.3.fc2.weight", "encoder/layer_3/ffn/linear_1/weight"))
    for hf, ct2_name in pairs:
        np.testing.assert_array_equal(encoder.state_dict()[hf].numpy(), ct2[ct2_name])
    with torch.no_grad():  # and it runs: 30 s of log-mel → 1500 frames
        assert encoder(torch.zeros(1, 80, 3000)).last_hidden_state.shape == (1, 1500, 384)
    assert not any(p.name.startswith(".") for p in cfg.paths.encoder.parent.iterdir()), "staging left behind"


def test_a_source_that_does_not_fit_audio_input_leaves_models_encoder(project):
    cfg, _ = project
    before = {p.name: p.stat().st_mtime_ns for p in cfg.paths.encoder.iterdir()}
    wrong = load_config(cfg.paths.root / "params.yaml", profile="tiny", root=cfg.paths.root,
                        overrides={"audio_input": {"encoder_source": "base"}})
    with pytest.raises(ValueError, match=r"encoder_source 'base'.*encoder_dim=384 \(source has 512\)"):
        prepare_encoder.run(wrong)
    assert {p.name: p.stat().st_mtime_ns for p in cfg.paths.encoder.iterdir()} == before


def test_a_relative_ct2_directory_is_read_from_the_project_root(project):
    cfg, _ = project
    (cfg.paths.root / "whisper-ct2").symlink_to(locate_source("tiny.en"), target_is_directory=True)
    local = load_config(cfg.paths.root / "params.yaml", profile="tiny", root=cfg.paths.root,
                        overrides={"audio_input": {"encoder_source": "whisper-ct2"}})
    summary = prepare_encoder.run(local)
    assert summary["source"] == str(cfg.paths.root / "whisper-ct2")


def test_registry_runs_prepare_encoder_before_the_steps_that_read_it():
    step = get_step("prepare_encoder")
    assert step.outs == ("models/encoder",) and "audio_input" in step.params and "tiny.en" in SOURCES
    for reader in ("encode", "text_pretrain"):
        assert "models/encoder" in get_step(reader).deps


def _mini_whisper_project(tmp_path, **geometry):
    from deeptalk.testing.mini_checkpoints import MiniCheckpoints, build_whisper

    whisper = build_whisper(tmp_path / "checkpoints" / "whisper-medium")
    fields = {**MiniCheckpoints(llm=tmp_path, whisper=whisper, snac=tmp_path, scorer=tmp_path).whisper_geometry(), **geometry}
    over = {"audio_input": {**fields, "max_seconds": 30.0, "encoder_source": "checkpoints/whisper-medium",
                            "encoder_checkpoint": "models/encoder"}}
    return whisper, load_config(tmp_path / "params.yaml", profile="paper", root=tmp_path, overrides=over)


def test_a_transformers_whisper_dir_is_validated_and_passed_through(tmp_path):
    whisper, cfg = _mini_whisper_project(tmp_path)
    summary = prepare_encoder.run(cfg)
    assert summary["source"] == str(tmp_path / "checkpoints" / "whisper-medium")
    assert (cfg.paths.encoder / "model.safetensors").read_bytes() == (whisper / "model.safetensors").read_bytes()
    encoder = build_audio_encoder(cfg.audio_input)
    source = build_audio_encoder(cfg.audio_input.__class__(**{**cfg.audio_input.__dict__,
                                                               "encoder_checkpoint": str(whisper)}))
    assert all(torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), source.state_dict().values()))


def test_a_transformers_whisper_of_another_geometry_is_refused(tmp_path):
    _, cfg = _mini_whisper_project(tmp_path, encoder_dim=1024)
    with pytest.raises(ValueError, match=r"encoder_dim=1024 \(source has 64\)"):
        prepare_encoder.run(cfg)
    assert not cfg.paths.encoder.exists()
