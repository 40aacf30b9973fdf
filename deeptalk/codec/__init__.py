"""Audio codecs: waveform ⇄ K=7 code streams in SNAC's layout (embedded k-means codec, or SNAC)."""

from deeptalk.codec.base import Codec, StreamingDecoder
from deeptalk.codec.config import CodecConfig
from deeptalk.codec.registry import load_codec

__all__ = ["Codec", "CodecConfig", "StreamingDecoder", "load_codec"]
