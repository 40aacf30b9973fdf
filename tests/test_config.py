from pathlib import Path

import pytest
import yaml

from deeptalk.config import PROFILES, load_config

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
