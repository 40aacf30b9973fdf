"""Expert-load profiling per modality and the rules that turn it into an expert split (paper.md §2.3).

**Which positions count as speech and which as text.** A packed position carries K audio ids and one text id
(``deeptalk.tokens``). A position is a *speech position* when the model is processing or producing audio there:
its text-stream input is ``AUDIO_PH`` (a user-audio feature position) or at least one audio-stream input *or*
label is a codec code (inside a spoken answer). A position is a *text position* when it carries a real text
token (text-stream input below ``text_vocab_size``) and no audio-stream input or label is a codec code.
Everything else (padding, ``BOA``/``EOA``/delay pads only, role/special tokens) is counted in neither, so that
structural tokens do not blur the two distributions. Counts are taken on real positions only
(``attention_mask == 1``).

**Statistics** per MoE layer × expert and modality: ``counts`` (how often the expert is in the top-k) and
``probs`` (summed softmax gate probability). The split rules use the normalised top-k counts.

**Split rules** (all produce, per MoE layer, the sorted speech-expert indices; every other expert is text):
- ``adaptive``: rank experts by the ratio of normalised speech load to normalised text load; the speech
  experts are those with ratio > 1 (more speech than text share), clamped to
  ``[ceil(min_fraction·E), floor(max_fraction·E)]`` taken in ratio order, and never fewer than ``top_k`` in
  either group (a masked stage must still be able to route ``top_k`` experts).
- ``fixed:N``: the N experts with the highest ratio in every layer (the reference's ``audio20``).
- ``random:N``: N experts drawn uniformly per layer from a seeded generator (a control for the rule).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deeptalk.tokens import TokenLayout

log = logging.getLogger(__name__)

MODALITIES = ("speech", "text")


def modality_masks(
    input_ids: torch.Tensor, labels: torch.Tensor | None, attention_mask: torch.Tensor, layout: TokenLayout
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(speech [B,T] bool, text [B,T] bool)`` for packed ids ``[B,T,S]`` (definition: module docstring)."""
    if input_ids.dim() != 3 or input_ids.shape[-1] != layout.n_streams:
        raise ValueError(f"input_ids must be [B, T, {layout.n_streams}], got {tuple(input_ids.shape)}")
    real = attention_mask.bool()
    k = layout.n_audio_streams

    def has_code(ids: torch.Tensor) -> torch.Tensor:  # ids: [B,T,K] global ids of the audio streams
        local = ids - layout.text_block_size - torch.arange(k, device=ids.device) * layout.audio_block_size
        return ((local >= 0) & (local < layout.codebook_size)).any(-1)

    audio = has_code(input_ids[..., :k])
    if labels is not None:
        audio |= has_code(labels[..., :k].clamp_min(0))  # IGNORE_INDEX → id 0, a text id, never a code
    text_in = input_ids[..., layout.text_stream]
    speech = real & ((text_in == layout.text_special("AUDIO_PH")) | audio)
    text = real & ~speech & (text_in < layout.text_vocab_size)
    return speech, text


@dataclass
class ExpertLoad:
    """Accumulated top-k counts and gate probabilities, ``[n_layers, n_experts]`` per modality."""

    n_layers: int
    n_experts: int
    top_k: int
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.top_k > self.n_experts:
            raise ValueError(f"top_k={self.top_k} must be in [1, n_experts={self.n_experts}]")
        for m in MODALITIES:
            self.counts.setdefault(m, np.zeros((self.n_layers, self.n_experts), dtype=np.float64))
            self.probs.setdefault(m, np.zeros((self.n_layers, self.n_experts), dtype=np.float64))
            self.positions.setdefault(m, 0)

    def reset(self) -> None:
        for m in MODALITIES:
            self.counts[m][:] = 0
            self.probs[m][:] = 0
            self.positions[m] = 0

    @torch.no_grad()
    def add_layer(
        self, layer: int, topk_indices: torch.Tensor, probs: torch.Tensor, masks: dict[str, torch.Tensor]
    ) -> None:
        """Add one router call of MoE layer ``layer`` (0-based in depth order): ``topk_indices [N,k]`` and
        ``probs [N,E]`` as routed (masked experts excluded), ``masks``: modality → bool over the same N
        positions (``[B,T]`` flattened row-major)."""
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"MoE layer {layer} outside [0, {self.n_layers})")
        probs = probs.detach().float().reshape(-1, self.n_experts).cpu()
        top = topk_indices.detach().reshape(probs.shape[0], -1).cpu()
        for m in MODALITIES:
            sel = masks[m].reshape(-1).bool().cpu()
            if sel.shape[0] != probs.shape[0]:
                raise ValueError(f"{m} mask has {sel.shape[0]} positions, the router saw {probs.shape[0]}")
            if not sel.any():
                continue
            self.counts[m][layer] += torch.bincount(top[sel].reshape(-1), minlength=self.n_experts).numpy()
            self.probs[m][layer] += probs[sel].sum(0).numpy()

    def add_positions(self, masks: dict[str, torch.Tensor]) -> None:
        for m in MODALITIES:
            self.positions[m] += int(masks[m].sum())

    def normalised(self, modality: str, stat: str = "counts") -> np.ndarray:
        """Per-layer distribution over experts (rows sum to 1; uniform where nothing was counted)."""
        table = (self.counts if stat == "counts" else self.probs)[modality]
        totals = table.sum(1, keepdims=True)
        uniform = np.full_like(table, 1.0 / self.n_experts)
        return np.where(totals > 0, table / np.maximum(totals, 1e-12), uniform)

    def summary(self) -> dict:
        """Compact per-modality shares for metrics logs: normalised top-k counts, rounded."""
        return {
            m: {"positions": self.positions[m], "share": np.round(self.normalised(m), 4).tolist()}
            for m in MODALITIES
        }

    def to_json(self) -> dict:
        return {
            "n_layers": self.n_layers,
            "n_experts": self.n_experts,
            "top_k": self.top_k,
            "positions": dict(self.positions),
            "counts": {m: self.counts[m].tolist() for m in MODALITIES},
            "probs": {m: self.probs[m].tolist() for m in MODALITIES},
        }

    @classmethod
    def from_json(cls, data: dict) -> ExpertLoad:
        load = cls(data["n_layers"], data["n_experts"], data["top_k"])
        for m in MODALITIES:
            load.counts[m] = np.asarray(data["counts"][m], dtype=np.float64)
            load.probs[m] = np.asarray(data["probs"][m], dtype=np.float64)
            load.positions[m] = int(data["positions"][m])
        return load


# ---- split rules --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitBounds:
    """How many speech experts a layer may get."""

    n_experts: int
    top_k: int
    min_fraction: float = 0.25
    max_fraction: float = 0.5

    @property
    def lo(self) -> int:
        return max(self.top_k, math.ceil(self.min_fraction * self.n_experts))

    @property
    def hi(self) -> int:
        return min(self.n_experts - self.top_k, math.floor(self.max_fraction * self.n_experts))

    def check(self) -> None:
        if self.lo > self.hi:
            raise ValueError(
                f"no valid split: {self.n_experts} experts with top_k={self.top_k} and fractions "
                f"[{self.min_fraction}, {self.max_fraction}] allow between {self.lo} and {self.hi} speech experts"
            )


def speech_ratio(speech: np.ndarray, text: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per-expert ratio of normalised speech load to normalised text load (rows: layers)."""
    def norm(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if (t < 0).any():
            raise ValueError("load tables must be non-negative")
        s = t.sum(1, keepdims=True)
        return np.where(s > 0, t / np.maximum(s, 1e-300), 1.0 / t.shape[1])

    return (norm(speech) + eps) / (norm(text) + eps)


def _ranked(ratio_row: np.ndarray) -> list[int]:
    # highest ratio first; ties broken by expert index so the rule is deterministic
    return sorted(range(len(ratio_row)), key=lambda e: (-ratio_row[e], e))


def adaptive_split(speech: np.ndarray, text: np.ndarray, bounds: SplitBounds) -> list[list[int]]:
    bounds.check()
    ratio = speech_ratio(speech, text)
    result = []
    for row in ratio:
        order = _ranked(row)
        n = int((row > 1.0).sum())
        n = min(max(n, bounds.lo), bounds.hi)
        result.append(sorted(order[:n]))
    return result


def fixed_split(speech: np.ndarray, text: np.ndarray, n: int, top_k: int) -> list[list[int]]:
    n_experts = np.asarray(speech).shape[1]
    if not top_k <= n <= n_experts - top_k:
        raise ValueError(f"fixed:{n} must leave at least top_k={top_k} experts in each group of {n_experts}")
    return [sorted(_ranked(row)[:n]) for row in speech_ratio(speech, text)]


def random_split(n_layers: int, n_experts: int, n: int, top_k: int, seed: int) -> list[list[int]]:
    if not top_k <= n <= n_experts - top_k:
        raise ValueError(f"random:{n} must leave at least top_k={top_k} experts in each group of {n_experts}")
    rng = np.random.default_rng(seed)
    return [sorted(int(e) for e in rng.choice(n_experts, size=n, replace=False)) for _ in range(n_layers)]


def random_like(counts: list[int], n_experts: int, seed: int) -> list[list[int]]:
    """``counts[l]`` experts of layer ``l`` drawn uniformly with a seeded generator: the ``random`` baseline's
    split, as many speech experts per layer as the profiled split but not chosen by load (issue 11)."""
    if any(not 0 < n < n_experts for n in counts):
        raise ValueError(f"random split: every layer needs between 1 and {n_experts - 1} speech experts, got {counts}")
    rng = np.random.default_rng([seed, n_experts])
    return [sorted(int(e) for e in rng.choice(n_experts, size=n, replace=False)) for n in counts]


def split_from_rule(
    rule: str, load: ExpertLoad, min_fraction: float, max_fraction: float, seed: int
) -> list[list[int]]:
    """Apply ``adaptive`` | ``fixed:N`` | ``random:N`` to normalised top-k counts."""
    speech, text = load.counts["speech"], load.counts["text"]
    if rule == "adaptive":
        return adaptive_split(speech, text, SplitBounds(load.n_experts, load.top_k, min_fraction, max_fraction))
    name, _, arg = rule.partition(":")
    if name in {"fixed", "random"} and arg.isdigit():
        if name == "fixed":
            return fixed_split(speech, text, int(arg), load.top_k)
        return random_split(load.n_layers, load.n_experts, int(arg), load.top_k, seed)
    raise ValueError(f"unknown split rule {rule!r}; use adaptive, fixed:N or random:N")


# ---- outputs ------------------------------------------------------------------------------------------------


def write_load_csv(load: ExpertLoad, path: Path, speech_experts: list[list[int]] | None = None) -> None:
    """Long-format table (layer, expert, modality shares, ratio, assigned group): the DVC plot file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    share = {m: load.normalised(m) for m in MODALITIES}
    prob = {m: load.normalised(m, "probs") for m in MODALITIES}
    ratio = speech_ratio(load.counts["speech"], load.counts["text"])
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["layer", "expert", "speech_share", "text_share", "speech_prob", "text_prob", "ratio", "group"]
        )
        for layer in range(load.n_layers):
            for e in range(load.n_experts):
                group = ""
                if speech_experts is not None:
                    group = "speech" if e in speech_experts[layer] else "text"
                writer.writerow([
                    layer, e, f"{share['speech'][layer, e]:.6f}", f"{share['text'][layer, e]:.6f}",
                    f"{prob['speech'][layer, e]:.6f}", f"{prob['text'][layer, e]:.6f}",
                    f"{ratio[layer, e]:.6f}", group,
                ])


def plot_heatmaps(load: ExpertLoad, out_dir: Path, speech_experts: list[list[int]] | None = None) -> list[Path]:
    """One PNG per modality (MoE layers × experts, normalised top-k share); speech experts outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for m in MODALITIES:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * load.n_experts + 2), max(2.5, 0.45 * load.n_layers + 1.5)))
        image = ax.imshow(load.normalised(m), aspect="auto", cmap="viridis")
        if speech_experts is not None:
            for layer, experts in enumerate(speech_experts):
                for e in experts:
                    ax.add_patch(plt.Rectangle((e - 0.5, layer - 0.5), 1, 1, fill=False, ec="white", lw=1.2))
        ax.set_yticks(range(load.n_layers))
        if load.n_experts <= 32:
            ax.set_xticks(range(load.n_experts))
        ax.set_xlabel("expert")
        ax.set_ylabel("MoE layer")
        ax.set_title(f"{m} positions: top-{load.top_k} share ({load.positions[m]} positions)")
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        path = out_dir / f"expert_load_{m}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


# ---- running a model -----------------------------------------------------------------------------------------


@torch.no_grad()
def profile_model(model, batches, desc: str = "profile") -> ExpertLoad:
    """Teacher-forced pass of a SpeechLM over ``batches`` (iterable of SpeechBatch) with unrestricted routing,
    accumulating the top-k counts and gate probabilities at speech and at text positions."""
    from tqdm.auto import tqdm

    from deeptalk.model.switches import RoutingMode

    layers = model.moe_layers()
    load = ExpertLoad(len(layers), layers[0].num_experts, int(model.backbone.config.num_experts_per_tok))
    previous = model.routing_mode
    was_training = model.training
    model.set_routing(RoutingMode.NONE)
    model.eval()
    try:
        for batch in tqdm(batches, desc=desc):
            batch = batch.to(model.device)
            with model.record_routing() as recorder:
                model(batch)
            speech, text = modality_masks(batch.input_ids, batch.labels, batch.attention_mask, model.layout)
            masks = {"speech": speech, "text": text}
            load.add_positions(masks)
            for i, moe in enumerate(layers):
                load.add_layer(i, recorder.indices(moe.layer_idx), recorder.probs(moe.layer_idx), masks)
    finally:
        model.set_routing(previous)
        model.train(was_training)
    if load.positions["speech"] == 0 or load.positions["text"] == 0:
        raise ValueError(f"profiling saw {load.positions} positions: need both speech and text positions")
    return load
