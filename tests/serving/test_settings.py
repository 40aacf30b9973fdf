import json

import pytest

from deeptalk.inference.config import SamplingConfig, ServiceConfig
from deeptalk.inference.engine import META_FILE
from deeptalk.serving.settings import service_config_for


def test_packaged_settings_then_env_overrides(tmp_path, monkeypatch):
    stored = ServiceConfig(max_steps=77, sampling=SamplingConfig(audio_top_k=3))
    (tmp_path / META_FILE).write_text(json.dumps({"profile": "tiny", "service": stored.to_dict()}))
    monkeypatch.delenv("DEEPTALK_SERVICE", raising=False)
    assert service_config_for(tmp_path) == stored
    monkeypatch.setenv("DEEPTALK_SERVICE", json.dumps({"max_concurrency": 5, "sampling": {"seed": 1}}))
    cfg = service_config_for(tmp_path)
    assert (
        cfg.max_concurrency == 5
        and cfg.max_steps == 77
        and cfg.sampling == SamplingConfig(audio_top_k=3, seed=1)
    )
    monkeypatch.setenv("DEEPTALK_SERVICE", json.dumps({"nope": 1}))
    with pytest.raises(ValueError, match="unknown field"):
        service_config_for(tmp_path)
    monkeypatch.setenv("DEEPTALK_SERVICE", "{bad")
    with pytest.raises(ValueError, match="not valid JSON"):
        service_config_for(tmp_path)


def test_profile_defaults_without_stored_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPTALK_SERVICE", raising=False)
    (tmp_path / META_FILE).write_text(json.dumps({"profile": "paper"}))
    assert service_config_for(tmp_path) == ServiceConfig.for_profile("paper")


def test_config_validation():
    with pytest.raises(ValueError):
        ServiceConfig(pcm_format="mp3")
    with pytest.raises(ValueError):
        SamplingConfig(audio_top_k=0)
    with pytest.raises(ValueError):
        ServiceConfig.for_profile("huge")
