"""Audio codecs: waveform ⇄ K=7 code streams in SNAC's layout (embedded k-means codec, or SNAC).

Exports resolve lazily so ``deeptalk.config`` (which needs only ``deeptalk.codec.config``) does not pay for
importing torch.
"""

from importlib import import_module

_EXPORTS = {
    "Codec": "deeptalk.codec.base",
    "StreamingDecoder": "deeptalk.codec.base",
    "CodecConfig": "deeptalk.codec.config",
    "load_codec": "deeptalk.codec.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deeptalk.codec' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
