from pathlib import Path

import pytest
import yaml

from deeptalk.config import PROFILES, load_config
from deeptalk.presets import load_preset

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_composes(profile, tmp_path):
    cfg = load_config(tmp_path / "absent.yaml", profile=profile)
    assert cfg.profile == profile
    assert cfg.paths.root == tmp_path


def test_repo_params_file_loads():
    cfg = load_config(REPO / "params.yaml")
    assert cfg.profile == "tiny"


@pytest.mark.parametrize("profile", PROFILES)
def test_repo_params_file_does_not_override_any_profile(profile, tmp_path):
    """The committed params.yaml must not carry one profile's values into another (paper gets paper's)."""
    ours = load_config(REPO / "params.yaml", profile=profile, root=tmp_path)
    preset = load_config(tmp_path / "absent.yaml", profile=profile, root=tmp_path)
    assert ours == preset


def test_params_override_presets(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"profile": "tiny", "seed": 7, "gates": {"max_text_drop_pct": 12.5}}))
    cfg = load_config(params)
    assert cfg.seed == 7
    assert cfg.evaluation.gates.max_text_drop_pct == 12.5


def test_overrides_win_over_params(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 7}))
    assert load_config(params, overrides={"seed": 9}).seed == 9


def test_unknown_section_is_an_error(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"modle": {"hidden_size": 3}}))
    with pytest.raises(ValueError, match="unknown section.*modle"):
        load_config(params)


def test_unknown_key_is_an_error_naming_it(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"gates": {"max_txt_drop": 3}}))
    with pytest.raises(ValueError, match="max_txt_drop"):
        load_config(params)


def test_unknown_profile_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        load_config(tmp_path / "absent.yaml", profile="huge")


# ---- profile preset files (configs/profiles/<profile>.yaml) ------------------------------------------------


def test_paper_gets_the_papers_values(tmp_path):
    """--profile paper: the real checkpoint, SNAC, 50 Hz positions and the paper's 5.5 % gate, not tiny's."""
    cfg = load_config(REPO / "params.yaml", profile="paper", root=tmp_path)
    assert cfg.model.checkpoint == "checkpoints/DeepSeek-V2-Lite-Chat"
    assert cfg.codec.kind == "snac" and cfg.codec.n_streams == 7
    assert cfg.audio_input.projector_stride == 1
    assert cfg.evaluation.gates.max_text_drop_pct == 5.5
    assert cfg.packing.max_length == 1200
    assert cfg.training.s3.steps == 22800


def test_env_profile_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPTALK_PROFILE", "small")
    cfg = load_config(REPO / "params.yaml", root=tmp_path)
    assert cfg.profile == "small" and cfg.model.hidden_size == 256


@pytest.mark.parametrize("profile", PROFILES)
def test_for_profile_reads_the_preset_file(profile):
    """Each section's public ``for_profile`` is the file's section, typed (tuples stay tuples)."""
    from deeptalk.codec.config import CodecConfig
    from deeptalk.evaluation.config import EvalConfig, GateThresholds
    from deeptalk.training.config import TrainingConfig

    raw = load_preset(profile)
    assert CodecConfig.for_profile(profile).level_strides == tuple(raw["codec"]["level_strides"])
    assert TrainingConfig.for_profile(profile).s1.steps == raw["training"]["s1"]["steps"]
    gates = GateThresholds.for_profile(profile)
    assert gates == EvalConfig.for_profile(profile).gates
    assert gates.max_text_drop_pct == raw["evaluation"]["gates"]["max_text_drop_pct"]


def test_params_override_a_preset_key_only(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"profile": "small", "packing": {"max_length": 900}, "codec": {"kmeans_iters": 3}}))
    cfg = load_config(params)
    assert cfg.packing.max_length == 900 and cfg.codec.kmeans_iters == 3
    assert cfg.codec.codebook_size == 4096  # the rest of small's preset stays


def _with_presets(monkeypatch, tmp_path, text: str) -> None:
    import deeptalk.presets as presets

    for name in PROFILES:
        (tmp_path / f"{name}.yaml").write_text((presets.PROFILES_DIR / f"{name}.yaml").read_text())
    (tmp_path / "tiny.yaml").write_text(text)
    monkeypatch.setattr(presets, "PROFILES_DIR", tmp_path)


def test_unknown_key_in_a_preset_file_is_an_error(tmp_path, monkeypatch):
    _with_presets(monkeypatch, tmp_path, "codec: {codebok_size: 12}\n")
    with pytest.raises(ValueError, match=r"tiny.yaml: codec: unknown key\(s\) \['codebok_size'\]"):
        load_config(tmp_path / "absent.yaml", profile="tiny")


def test_unknown_section_in_a_preset_file_is_an_error(tmp_path, monkeypatch):
    _with_presets(monkeypatch, tmp_path, "codecs: {}\n")
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['codecs'\]"):
        load_config(tmp_path / "absent.yaml", profile="tiny")


def test_preset_missing_a_required_key_is_an_error(tmp_path, monkeypatch):
    _with_presets(monkeypatch, tmp_path, "training: {s1: {steps: 3, batch_size: 2, lr: 0.1}}\n")
    with pytest.raises(ValueError, match=r"training: missing required key\(s\) \['text_pretrain'"):
        load_config(tmp_path / "absent.yaml", profile="tiny")


def test_missing_preset_file_is_an_error(tmp_path, monkeypatch):
    import deeptalk.presets as presets

    monkeypatch.setattr(presets, "PROFILES_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="preset file .*tiny.yaml is missing"):
        load_config(tmp_path / "absent.yaml", profile="tiny")
