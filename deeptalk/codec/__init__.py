"""Audio codecs: waveform ⇄ K=7 code streams in SNAC's layout (embedded k-means codec, or SNAC).

Exports resolve lazily so ``deeptalk.config`` (which needs only ``deeptalk.codec.config``) does not pay for
importing torch.
"""

from deeptalk.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "Codec": "deeptalk.codec.base",
    "StreamingDecoder": "deeptalk.codec.base",
    "CodecConfig": "deeptalk.codec.config",
    "load_codec": "deeptalk.codec.registry",
})
