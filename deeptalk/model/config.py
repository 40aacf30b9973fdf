"""Typed configuration of the speech LM: backbone architecture, loss weighting, and their composition.

``BackboneConfig`` is the ``model`` section of ``params.yaml`` (see ``deeptalk/config.py``). When
``checkpoint`` names a local Hugging Face directory the architecture comes from that directory's
``config.json`` and the size fields below are not used (the ``paper`` preset fills them with
DeepSeek-V2-Lite's numbers only as documentation).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, Self

from deeptalk.audio_input import AudioInputConfig
from deeptalk.presets import preset
from deeptalk.tokens import TokenLayout

FAMILIES = ("deepseek_v2", "qwen2_moe")
EXPERTS_IMPLEMENTATIONS = ("auto", "eager", "batched_mm", "grouped_mm", "sorted_mm")
LOSS_REDUCTIONS = ("weighted_sum", "reference_mean")
HEADS = ("tied", "untied")


@dataclass(frozen=True)
class BackboneConfig:
    """MoE decoder backbone. Field names follow DeepSeek-V2's HF config where one exists."""

    family: str = "deepseek_v2"  # "deepseek_v2" | "qwen2_moe"
    checkpoint: str | None = None  # local HF directory of a text LLM; None = build from the fields below
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    first_k_dense_replace: int = 1  # the first k decoder layers have a dense FFN (DeepSeek: 1)
    n_routed_experts: int = 8
    num_experts_per_tok: int = 2
    n_shared_experts: int = 1  # shared experts, fused into one MLP of n × moe_intermediate_size
    moe_intermediate_size: int = 128
    intermediate_size: int = 512  # FFN width of the dense layer(s)
    # Multi-head latent attention (DeepSeek-V2); Qwen2-MoE uses hidden_size // num_heads per head instead.
    kv_lora_rank: int = 64
    q_lora_rank: int | None = None
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 16
    v_head_dim: int = 32
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02  # also the std of new embedding rows (reference: N(0, 0.02))
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = False  # DeepSeek-V2-Lite: top-k weights are NOT renormalised
    aux_loss_alpha: float = 0.001  # sequence-level load-balance loss weight (DeepSeek seq_aux), 0 = off
    experts_implementation: str = "auto"  # auto = sorted_mm on CPU, grouped_mm on GPU (benchmarks/moe_layer.py)
    attn_implementation: str = "sdpa"
    dtype: str = "float32"
    # "tied": the head is the input embedding, as in the reference (an untied source's trained head is
    # dropped); "untied": keep the source's trained head rows and extend them with new rows, so the imported
    # model's text logits equal the original's before any training (README: "Importing the paper checkpoint")
    head: str = "tied"

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {HEADS}")
        if self.family not in FAMILIES:
            raise ValueError(f"unknown backbone family {self.family!r}; supported: {FAMILIES}")
        if self.experts_implementation not in EXPERTS_IMPLEMENTATIONS:
            raise ValueError(
                f"unknown experts_implementation {self.experts_implementation!r}; choose one of {EXPERTS_IMPLEMENTATIONS}"
            )
        if self.checkpoint is None:
            if not 0 <= self.first_k_dense_replace < self.num_layers:
                raise ValueError(
                    f"first_k_dense_replace={self.first_k_dense_replace} leaves no MoE layer in {self.num_layers} layers"
                )
            if not 0 < self.num_experts_per_tok <= self.n_routed_experts:
                raise ValueError(
                    f"num_experts_per_tok={self.num_experts_per_tok} must be in [1, n_routed_experts={self.n_routed_experts}]"
                )
            if self.hidden_size % self.num_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.aux_loss_alpha < 0:
            raise ValueError(f"aux_loss_alpha must be >= 0, got {self.aux_loss_alpha}")

    @classmethod
    def for_profile(cls, profile: str) -> Self:
        """The ``model`` section of ``configs/profiles/<profile>.yaml``."""
        return preset(cls, "model", profile)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(**_checked(cls, data))


@dataclass(frozen=True)
class LossConfig:
    """How per-stream cross-entropies combine into the training loss.

    The reference (paper.md §1.6) averages its list of losses: (text + 7 audio + 0·state)/9 for batches with
    speech targets but (text + 0·state)/2 for text-only batches, so the effective text weight changes with the
    batch type (1/9 vs 1/2), a side effect rather than a design. ``weighted_sum`` (default, chosen on purpose)
    gives every stream a fixed weight in every batch: the text/audio ratio inside speech batches equals the
    reference's, text-only batches are no longer up-weighted 4.5×, and the step size no longer depends on
    batch composition. ``reference_mean`` reproduces the reference exactly (including its always-zero
    state term in the denominator) for comparison runs. Streams whose labels are all ignored are skipped in
    both modes, as in the reference.
    """

    text_weight: float = 1.0
    audio_weights: tuple[float, ...] | None = None  # one per audio stream; None = 1.0 each
    reduction: str = "weighted_sum"  # "weighted_sum" | "reference_mean"

    def __post_init__(self) -> None:
        if self.reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"unknown loss reduction {self.reduction!r}; choose one of {LOSS_REDUCTIONS}")
        if self.audio_weights is not None:
            object.__setattr__(self, "audio_weights", tuple(float(w) for w in self.audio_weights))
            if any(w < 0 for w in self.audio_weights):
                raise ValueError(f"audio loss weights must be >= 0, got {self.audio_weights}")
        if self.text_weight < 0:
            raise ValueError(f"text loss weight must be >= 0, got {self.text_weight}")

    def audio_weight(self, stream: int, n_audio_streams: int) -> float:
        if self.audio_weights is None:
            return 1.0
        if len(self.audio_weights) != n_audio_streams:
            raise ValueError(
                f"LossConfig.audio_weights has {len(self.audio_weights)} entries for {n_audio_streams} audio streams"
            )
        return self.audio_weights[stream]

    @classmethod
    def for_profile(cls, profile: str) -> Self:
        if profile not in ("tiny", "small", "paper"):
            raise ValueError(f"unknown profile {profile!r}; choose tiny, small or paper")
        return cls()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["audio_weights"] = None if self.audio_weights is None else list(self.audio_weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        data = _checked(cls, data)
        if data.get("audio_weights") is not None:
            data["audio_weights"] = tuple(data["audio_weights"])
        return cls(**data)


@dataclass(frozen=True)
class SpeechLMConfig:
    """Everything needed to rebuild a SpeechLM's architecture; serialized into every checkpoint."""

    backbone: BackboneConfig
    layout: TokenLayout
    audio_input: AudioInputConfig = field(default_factory=AudioInputConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        weights = self.loss.audio_weights
        if weights is not None and len(weights) != self.layout.n_audio_streams:
            raise ValueError(
                f"LossConfig.audio_weights has {len(weights)} entries for {self.layout.n_audio_streams} audio streams"
            )

    @classmethod
    def from_project(cls, cfg: Any, layout: TokenLayout, loss: LossConfig | None = None) -> Self:
        """Compose from a ``deeptalk.config.ProjectConfig`` (``cfg.model``, ``cfg.audio_input``)."""
        return cls(backbone=cfg.model, layout=layout, audio_input=cfg.audio_input, loss=loss or LossConfig())

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone.to_dict(),
            "layout": self.layout.to_dict(),
            "audio_input": asdict(self.audio_input),
            "loss": self.loss.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        _checked(cls, data)
        return cls(
            backbone=BackboneConfig.from_dict(data["backbone"]),
            layout=TokenLayout.from_dict(data["layout"]),
            audio_input=AudioInputConfig(**_checked(AudioInputConfig, data["audio_input"])),
            loss=LossConfig.from_dict(data["loss"]),
        )


def _checked(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown keys instead of silently dropping them."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}; valid: {sorted(names)}")
    return dict(data)
