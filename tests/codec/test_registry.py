import json

import pytest

from deeptalk.codec.registry import load_codec


def test_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_codec(tmp_path / "nope")


def test_missing_config(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_codec(tmp_path)


def test_garbled_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_codec(tmp_path)


def test_unknown_kind(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"kind": "mp3"}))
    with pytest.raises(ValueError, match="kind 'mp3'"):
        load_codec(tmp_path)


def test_missing_weights(codec, tmp_path):
    codec.save(tmp_path)
    (tmp_path / "codec.safetensors").unlink()
    with pytest.raises(ValueError, match="no codec.safetensors"):
        load_codec(tmp_path)


def test_truncated_weights(codec, tmp_path):
    codec.save(tmp_path)
    data = (tmp_path / "codec.safetensors").read_bytes()
    (tmp_path / "codec.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="unreadable"):
        load_codec(tmp_path)


def test_config_weights_mismatch(codec, tmp_path):
    codec.save(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["codebook_size"] = 128
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="codebook 0 has shape"):
        load_codec(tmp_path)


def test_unknown_config_key(codec, tmp_path):
    codec.save(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["bogus"] = 1
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown key"):
        load_codec(tmp_path)
