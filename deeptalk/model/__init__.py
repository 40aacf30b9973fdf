"""DeepTalk model core: MoE backbone, speech LM wrapper, expert split/routing masks, freezing, MoExtend.

Exports resolve lazily so ``deeptalk.config`` (which needs only ``deeptalk.model.config``) does not pay for
importing transformers.
"""

from importlib import import_module

_EXPORTS = {
    "BackboneConfig": "deeptalk.model.config",
    "LossConfig": "deeptalk.model.config",
    "SpeechLMConfig": "deeptalk.model.config",
    "ExpertSplit": "deeptalk.model.experts",
    "RoutingMode": "deeptalk.model.switches",
    "ParamGroup": "deeptalk.model.switches",
    "apply_trainable": "deeptalk.model.freezing",
    "count_trainable": "deeptalk.model.freezing",
    "SpeechLM": "deeptalk.model.speech_lm",
    "SpeechLMOutput": "deeptalk.model.speech_lm",
    "add_speech_experts": "deeptalk.model.moextend",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deeptalk.model' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
