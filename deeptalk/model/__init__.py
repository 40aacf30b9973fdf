"""DeepTalk model core: MoE backbone, speech LM wrapper, expert split/routing masks, freezing, MoExtend.

Exports resolve lazily so ``deeptalk.config`` (which needs only ``deeptalk.model.config``) does not pay for
importing transformers.
"""

from deeptalk.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
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
})
