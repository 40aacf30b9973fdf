"""The expert split (which routed experts are "speech" experts, per MoE layer) and its routing masks.

The split is data: produced by expert-load profiling, saved as JSON, handed to the model and validated
against it at build time. Entry ``i`` belongs to the ``i``-th MoE layer in depth order (DeepSeek-V2-Lite:
entry 0 = decoder layer 1), the reference's ``audio_experts_file`` convention. Text experts are the rest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from deeptalk.model.switches import RoutingMode


@dataclass(frozen=True)
class ExpertSplit:
    """Per MoE layer, the indices of the speech experts; every other expert of the layer is a text expert."""

    speech: tuple[tuple[int, ...], ...]

    def __init__(self, speech: Sequence[Sequence[int]]) -> None:
        if isinstance(speech, (str, bytes)) or not isinstance(speech, Sequence):
            raise ValueError(f"ExpertSplit.speech must be a list of per-layer index lists, got {type(speech).__name__}")
        layers = []
        for layer, experts in enumerate(speech):
            if isinstance(experts, (str, bytes)) or not isinstance(experts, Sequence):
                raise ValueError(f"expert split layer {layer}: expected a list of expert indices, got {experts!r}")
            for idx in experts:
                if isinstance(idx, bool) or not isinstance(idx, int):
                    raise ValueError(f"expert split layer {layer}: expert index {idx!r} is not an integer")
            layers.append(tuple(int(i) for i in experts))
        object.__setattr__(self, "speech", tuple(layers))

    @property
    def n_layers(self) -> int:
        return len(self.speech)

    def validate(self, n_layers: int, n_experts: int | Sequence[int]) -> None:
        """Raise ValueError naming the layer and index when the split does not fit the model.

        ``n_experts`` is one count for all MoE layers or one per layer.
        """
        if self.n_layers != n_layers:
            raise ValueError(f"expert split has {self.n_layers} layers but the model has {n_layers} MoE layers")
        counts = [n_experts] * n_layers if isinstance(n_experts, int) else list(n_experts)
        if len(counts) != n_layers:
            raise ValueError(f"{len(counts)} expert counts given for {n_layers} MoE layers")
        for layer, (experts, count) in enumerate(zip(self.speech, counts, strict=True)):
            seen: set[int] = set()
            for idx in experts:
                if not 0 <= idx < count:
                    raise ValueError(
                        f"expert split layer {layer}: expert index {idx} out of range [0, {count})"
                    )
                if idx in seen:
                    raise ValueError(
                        f"expert split layer {layer}: expert index {idx} listed twice (groups overlap)"
                    )
                seen.add(idx)

    def speech_experts(self, layer: int) -> tuple[int, ...]:
        return self.speech[layer]

    def text_experts(self, layer: int, n_experts: int) -> tuple[int, ...]:
        speech = set(self.speech[layer])
        return tuple(i for i in range(n_experts) if i not in speech)

    def speech_mask(self, layer: int, n_experts: int) -> torch.Tensor:
        """Bool [n_experts], True at the speech experts of one MoE layer."""
        mask = torch.zeros(n_experts, dtype=torch.bool)
        mask[list(self.speech[layer])] = True
        return mask

    def allowed_mask(self, mode: RoutingMode, layer: int, n_experts: int) -> torch.Tensor | None:
        """Experts a router may choose under ``mode`` (None = all)."""
        mode = RoutingMode(mode)
        if mode is RoutingMode.NONE:
            return None
        speech = self.speech_mask(layer, n_experts)
        return speech if mode is RoutingMode.SPEECH_ONLY else ~speech

    # ---- serialisation ------------------------------------------------------------------------------------
    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text ``{"speech": [[...], ...]}``; also written to ``path`` when given."""
        text = json.dumps({"speech": [list(layer) for layer in self.speech]})
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> ExpertSplit:
        """Read a split from a JSON file path or JSON text; the reference's bare list-of-lists is accepted too."""
        text = str(source)
        if not text.lstrip().startswith(("{", "[")):
            path = Path(source)
            if not path.exists():
                raise ValueError(f"expert split file {path} does not exist")
            text = path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"expert split is not valid JSON: {err}") from err
        if isinstance(data, dict):
            unknown = set(data) - {"speech"}
            if "speech" not in data or unknown:
                raise ValueError(f"expert split JSON needs exactly the key 'speech', got {sorted(data)}")
            data = data["speech"]
        return cls(data)
