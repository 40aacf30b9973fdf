"""The DeepTalk speech LM: an MoE text LLM that reads and writes K codec streams plus one text stream.

Per position the input is the mean of the K+1 stream embeddings (reference: ``torch.mean(inputs_embeds,
dim=2)``); at user-audio feature positions the K audio-stream embeddings are replaced by projected Whisper
frames (``audio_input.interface: projector``), or the text-stream embedding by what a CTC head heard
(``pseudo_text`` / ``ctc_tokens``, :mod:`deeptalk.model.hearing`): a spoken turn then reads like a typed one. The Whisper encoder is pretrained and frozen: batches carry its frames (computed once by the encode
step; :meth:`SpeechLM.encode_speech` computes them when serving), so training runs only the projector. One head covers the whole ``TokenLayout``
(tied to the embedding, or the imported LLM's own head extended: ``BackboneConfig.head``); each stream's logits
are its slice of it.
The backbone is transformers' own model with maskable routers (see ``routers.py``); routing mode and
trainable groups are set by the training stage, never read from a checkpoint.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from deeptalk.audio_input import AudioInputConfig
from deeptalk.batch import AudioSegments, SpeechBatch
from deeptalk.model.audio_encoder import AudioProjector, build_audio_encoder, encode_trimmed, freeze
from deeptalk.model.hearing import CTCHead, HeardUnits, hear
from deeptalk.model.backbone import MoELayer, build_backbone, load_backbone, moe_layers, resize_vocab
from deeptalk.model.config import LossConfig, SpeechLMConfig
from deeptalk.model.experts import ExpertSplit
from deeptalk.model.switches import RoutingMode
from deeptalk.model.loss import combine_losses, sequence_aux_loss, stream_losses, stream_losses_from_hidden
from deeptalk.model.routers import RouterOutput, RoutingRecorder, attach_sink

log = logging.getLogger(__name__)

CONFIG_FILE = "speech_lm.json"
SPLIT_FILE = "expert_split.json"
FORMAT_VERSION = 1
LOGITS_MODES = ("all", "last", "none")


@dataclass
class SpeechLMOutput:
    loss: torch.Tensor | None  # combined stream losses (+ aux loss while training), None without labels
    stream_losses: dict[str, torch.Tensor]  # "text", "audio_0".."audio_{K-1}" (streams with targets only)
    logits: torch.Tensor | None  # [B, T, V] over the full layout ([B, 1, V] for "last", None for "none")
    cache: Cache | None = None
    router_logits: tuple[torch.Tensor, ...] | None = None  # per MoE layer [B·T, E] (masked experts at −inf)
    aux_loss: torch.Tensor | None = None  # sequence-level load balance loss (already included in loss)


class SpeechLM(nn.Module):
    def __init__(
        self,
        cfg: SpeechLMConfig,
        backbone: PreTrainedModel,
        audio_encoder: WhisperEncoder,
        projector: AudioProjector | CTCHead,
        expert_split: ExpertSplit | None = None,
        n_added_experts: int = 0,
    ) -> None:
        super().__init__()
        if backbone.get_input_embeddings().weight.shape[0] != cfg.layout.vocab_size:
            raise ValueError(
                f"backbone vocabulary {backbone.get_input_embeddings().weight.shape[0]} != layout {cfg.layout.vocab_size}"
            )
        self.cfg = cfg
        self.backbone = backbone
        self.audio_encoder = freeze(audio_encoder)
        self.projector = projector
        self.n_added_experts = n_added_experts
        self._routing_mode = RoutingMode.NONE
        self.expert_split: ExpertSplit | None = None
        if expert_split is not None:
            self.set_expert_split(expert_split)

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls, cfg: SpeechLMConfig, base_checkpoint: str | Path | None = None, expert_split: ExpertSplit | None = None
    ) -> SpeechLM:
        """A new speech LM: from a text HF checkpoint dir (``base_checkpoint`` or ``cfg.backbone.checkpoint``,
        embedding rows copied, new rows N(0, init range)) or, without one, freshly initialised from the config.
        Returned in eval mode, like transformers' ``from_pretrained``; call ``.train()`` to train."""
        layout = cfg.layout
        checkpoint = base_checkpoint if base_checkpoint is not None else cfg.backbone.checkpoint
        if checkpoint is not None:
            backbone = load_backbone(checkpoint, cfg.backbone)
            old_rows = backbone.get_input_embeddings().weight.shape[0]
            if old_rows > layout.text_vocab_size and old_rows != layout.vocab_size:
                raise ValueError(
                    f"checkpoint {checkpoint} has {old_rows} embedding rows, more than the layout's text vocabulary "
                    f"({layout.text_vocab_size}); build the layout with layout_for(..., text_rows={old_rows})"
                )
            # a text LLM: copy its rows and extend; a speech LM's backbone (same layout): keep every row
            resize_vocab(backbone, layout.vocab_size, keep_rows=old_rows, tie=cfg.backbone.head == "tied")
        else:
            backbone = build_backbone(cfg.backbone, layout.vocab_size)
        encoder = build_audio_encoder(cfg.audio_input).to(backbone.dtype)
        projector = _audio_interface(cfg, backbone.config.hidden_size).to(backbone.dtype)
        return cls(cfg, backbone, encoder, projector, expert_split=expert_split).eval()

    def with_new_audio_interface(self, audio_input: AudioInputConfig) -> SpeechLM:
        """This model with a freshly initialised audio interface as ``audio_input`` describes it (S1 aligns the
        interface the profile asks for, whatever the text LLM it starts from was saved with); the frozen encoder
        is kept and must have the same geometry."""
        if (audio_input.encoder_dim, audio_input.n_mels) != (self.cfg.audio_input.encoder_dim, self.cfg.audio_input.n_mels):
            raise ValueError("a new audio interface must read the same encoder (encoder_dim / n_mels differ)")
        self.cfg = SpeechLMConfig(self.cfg.backbone, self.cfg.layout, audio_input, self.cfg.loss)
        dtype = self.embed_tokens.weight.dtype
        self.projector = _audio_interface(self.cfg, self.hidden_size).to(device=self.device, dtype=dtype)
        return self

    def save_pretrained(self, path: str | Path) -> None:
        """Directory with ``speech_lm.json`` (config, layout), ``backbone/`` (HF format), ``audio_encoder/``
        (HF format), ``projector.safetensors`` and, when set, ``expert_split.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT_VERSION, "config": self.cfg.to_dict(), "n_added_experts": self.n_added_experts}
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        self.backbone.save_pretrained(path / "backbone")
        self.audio_encoder.save_pretrained(path / "audio_encoder")
        save_file({k: v.contiguous() for k, v in self.projector.state_dict().items()}, str(path / "projector.safetensors"))
        split_file = path / SPLIT_FILE
        if self.expert_split is not None:
            self.expert_split.to_json(split_file)
        elif split_file.exists():
            split_file.unlink()

    @classmethod
    def from_pretrained(cls, path: str | Path) -> SpeechLM:
        path = Path(path)
        meta_file = path / CONFIG_FILE
        if not meta_file.exists():
            raise ValueError(f"{path} is not a SpeechLM directory (no {CONFIG_FILE}); use SpeechLM.build for a text LLM")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: unsupported format {meta.get('format')!r}")
        cfg = SpeechLMConfig.from_dict(meta["config"])
        backbone = load_backbone(path / "backbone", cfg.backbone)
        encoder = WhisperEncoder.from_pretrained(path / "audio_encoder", local_files_only=True).to(backbone.dtype)
        projector = _audio_interface(cfg, backbone.config.hidden_size).to(backbone.dtype)
        projector.load_state_dict(load_file(str(path / "projector.safetensors")))
        split = ExpertSplit.from_json(path / SPLIT_FILE) if (path / SPLIT_FILE).exists() else None
        model = cls(cfg, backbone, encoder, projector, expert_split=split, n_added_experts=int(meta["n_added_experts"]))
        return model.eval()

    def export_text_lm(self, path: str | Path) -> None:
        """Write the backbone as a plain text LLM checkpoint (the reference's ``save_deepseekV2_model.py``):
        embedding/head cut to the text block, stock transformers classes, no speech parts. Note its inputs are
        single text embeddings, not the K+1-stream mean the speech LM was trained on (a mismatch the
        reference accepts for its text benchmarks)."""
        tied = self.cfg.backbone.head == "tied"
        config = copy.deepcopy(self.backbone.config)
        config.vocab_size = self.layout.text_block_size
        config.tie_word_embeddings = tied
        text = AutoModelForCausalLM.from_config(config, dtype=self.backbone.dtype)
        state = {k: v for k, v in self.backbone.state_dict().items() if not (tied and k == "lm_head.weight")}
        for key in [k for k in state if k.endswith("embed_tokens.weight") or k == "lm_head.weight"]:
            state[key] = state[key][: self.layout.text_block_size]
        missing, unexpected = text.load_state_dict(state, strict=False)
        if unexpected or set(missing) - ({"lm_head.weight"} if tied else set()):
            raise ValueError(f"text export mismatch: missing {missing}, unexpected {unexpected}")
        if tied:
            text.tie_weights()
        text.save_pretrained(path)

    # ---- accessors ------------------------------------------------------------------------------------------
    @property
    def layout(self):
        return self.cfg.layout

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.backbone.get_input_embeddings()

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def moe_layers(self) -> list[MoELayer]:
        """``(layer_idx, moe_module)`` per MoE layer in depth order; ExpertSplit entry i ↔ element i."""
        return moe_layers(self.backbone)

    def stream_logits(self, logits: torch.Tensor, stream: int) -> torch.Tensor:
        """A stream's logits: its slice of the full-vocabulary logits (local index = global id − offset)."""
        return logits[..., self.layout.stream_slice(stream)]

    def set_loss(self, loss: LossConfig) -> None:
        """Change the loss weighting (a training-stage choice; saved with the next checkpoint)."""
        self.cfg = SpeechLMConfig(self.cfg.backbone, self.cfg.layout, self.cfg.audio_input, loss)

    # ---- experts and routing ------------------------------------------------------------------------------
    def set_expert_split(self, split: ExpertSplit | None) -> None:
        """Attach (validated) or detach the expert split; re-applies the current routing mode."""
        if split is not None:
            layers = self.moe_layers()
            split.validate(len(layers), [moe.num_experts for moe in layers])
        self.expert_split = split
        if split is None and self._routing_mode is not RoutingMode.NONE:
            self.set_routing(RoutingMode.NONE)
        elif split is not None:
            self.set_routing(self._routing_mode)

    @property
    def routing_mode(self) -> RoutingMode:
        return self._routing_mode

    def set_routing(self, mode: RoutingMode | str, split: ExpertSplit | None = None) -> None:
        """Route among speech experts only, text experts only, or all (masked logits → −inf before softmax)."""
        mode = RoutingMode(mode)
        if split is not None:
            layers = self.moe_layers()
            split.validate(len(layers), [moe.num_experts for moe in layers])
            self.expert_split = split
        if mode is not RoutingMode.NONE and self.expert_split is None:
            raise ValueError(f"routing mode {mode.value} needs an expert split; none is set")
        for i, moe in enumerate(self.moe_layers()):
            allowed = None if mode is RoutingMode.NONE else self.expert_split.allowed_mask(mode, i, moe.num_experts)
            moe.router.set_allowed(allowed)
        self._routing_mode = mode
        log.info("routing mode: %s", mode.value)

    @contextmanager
    def record_routing(self) -> Iterator[RoutingRecorder]:
        """Record every routing decision (probs, top-k indices/weights per MoE layer) inside the block."""
        recorder = RoutingRecorder()
        with attach_sink([moe.router for moe in self.moe_layers()], recorder):
            yield recorder

    # ---- forward ----------------------------------------------------------------------------------------------
    def encode_speech(self, mel: torch.Tensor) -> torch.Tensor:
        """Frozen-encoder frames ``[F / 2, D]`` of one clip's log-mel ``[n_mels, F]`` (see ``encode_trimmed``)."""
        return encode_trimmed(self.audio_encoder, mel)

    def embed(self, batch: SpeechBatch, text_only: bool = False) -> torch.Tensor:
        """[B, T, H] input embeddings: mean over the K+1 stream embeddings, audio features spliced in.

        ``text_only`` embeds the text stream alone: the model read as the plain text LLM it extends (how the
        reference exports it for text benchmarks, paper.md §4.2, and how the original LLM was trained).
        """
        ids = batch.input_ids
        layout = self.layout
        if ids.ndim != 3 or ids.shape[-1] != layout.n_streams:
            raise ValueError(f"input_ids must be [B, T, {layout.n_streams}], got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= layout.vocab_size):
            raise ValueError(f"input ids outside [0, {layout.vocab_size}): min {int(ids.min())}, max {int(ids.max())}")
        if text_only:
            if batch.audio is not None and batch.audio.n_positions.numel() > 0:
                raise ValueError("text_only input cannot carry user audio")
            return self.embed_tokens(ids[..., layout.text_stream])
        emb = self.embed_tokens(ids)  # [B, T, S, H]
        if batch.audio is not None and batch.audio.n_positions.numel() > 0:
            emb = self._splice_audio(emb, batch.audio)
        return emb.mean(dim=2)

    def _splice_audio(self, emb: torch.Tensor, audio: AudioSegments) -> torch.Tensor:
        frames = audio.frames
        width = self.projector.fc1.in_features // self.projector.stride
        if frames.ndim != 3 or frames.shape[-1] != width:
            raise ValueError(f"AudioSegments.frames must be [N, F, {width}] encoder frames, got {tuple(frames.shape)}")
        if self.hears_text:
            return self._splice_heard(emb, audio)
        feats = self.projector(frames.to(self.projector.fc1.weight.dtype)).to(emb.dtype)  # [N, P, H]
        n_pos = audio.n_positions.to(emb.device).long()
        if bool((n_pos < 1).any()) or int(n_pos.max()) > feats.shape[1]:
            raise ValueError(f"AudioSegments.n_positions must be in [1, {feats.shape[1]}], got {n_pos.tolist()}")
        seg = torch.repeat_interleave(torch.arange(len(n_pos), device=emb.device), n_pos)  # [Σ n]
        first = torch.cumsum(n_pos, 0) - n_pos
        offset = torch.arange(seg.numel(), device=emb.device) - first[seg]
        pos = audio.start.to(emb.device).long()[seg] + offset
        rows = audio.batch_index.to(emb.device).long()[seg]
        b, t = emb.shape[:2]
        if bool((rows < 0).any() | (rows >= b).any()) or bool((pos < 0).any() | (pos >= t).any()):
            raise ValueError(f"audio segments reach outside the batch [{b}, {t}] (batch_index/start/n_positions)")
        k = self.layout.n_audio_streams
        emb = emb.clone()
        emb[rows, pos, :k] = feats[seg, offset].unsqueeze(1).expand(-1, k, -1)
        return emb

    # ---- hearing (audio_input.interface pseudo_text | ctc_tokens) --------------------------------------------
    @property
    def hears_text(self) -> bool:
        return self.cfg.audio_input.hears_text

    def hear(self, frames: torch.Tensor, frame_lengths: torch.Tensor | list[int]) -> list[HeardUnits]:
        """What the (frozen, eval-mode) CTC head hears in each segment of ``frames`` [N, F, D]."""
        if not self.hears_text:
            raise ValueError(f"audio_input.interface {self.cfg.audio_input.interface!r} has no CTC head to hear with")
        head = self.projector
        was_training = head.training
        head.eval()
        try:
            with torch.no_grad():
                return hear(head, frames.to(self.device), [int(n) for n in frame_lengths],
                            self.cfg.audio_input.ctc_temperature)
        finally:
            head.train(was_training)

    def audio_positions(self, frames: torch.Tensor) -> int:
        """Positions one utterance's encoder frames ``[F, D]`` occupy in a sequence when the LM reads heard
        units (the projector's come from the encoder geometry, ``AudioInputConfig.n_positions``)."""
        return len(self.hear(frames[None], [frames.shape[0]])[0])

    def transcribe_heard(self, frames: torch.Tensor) -> list[int]:
        """The greedy CTC transcript (local text ids) of one utterance's frames ``[F, D]``."""
        return self.hear(frames[None], [frames.shape[0]])[0].tokens.tolist()

    def _unit_embeddings(self, units: HeardUnits) -> torch.Tensor:
        """[m, H]: each heard unit read as text (its token's row, or the posterior-weighted mean of the rows)."""
        table = self.embed_tokens.weight
        if self.cfg.audio_input.interface == "ctc_tokens":
            return table[units.tokens.to(table.device)]
        post = units.posteriors.to(device=table.device, dtype=table.dtype)
        return post @ table[: post.shape[1]]

    def _splice_heard(self, emb: torch.Tensor, audio: AudioSegments) -> torch.Tensor:
        heard = self.hear(audio.frames, audio.lengths())
        text = self.layout.text_stream
        emb = emb.clone()
        for n, units in enumerate(heard):
            p = int(audio.n_positions[n])
            if p == 0:
                continue
            vecs = self._unit_embeddings(units).to(emb.dtype)
            if len(units) != p:  # packed with other counts (a cut segment, or a count from other weights)
                if len(units) < p:
                    raise ValueError(
                        f"audio segment {n} was packed with {p} positions but the CTC head hears {len(units)} units: "
                        "positions must come from this model's hearing (deeptalk.model.hearing.heard_positions)"
                    )
                vecs = vecs[:p]
            row, start = int(audio.batch_index[n]), int(audio.start[n])
            emb[row, start : start + p, text] = vecs
        return emb

    def _ctc_loss(self, audio: AudioSegments | None) -> torch.Tensor:
        """S1's alignment objective with a hearing interface: CTC of what was said (``audio.targets``)."""
        if audio is None or audio.targets is None or audio.n_positions.numel() == 0:
            raise ValueError("CTC alignment needs user audio with its transcript (AudioSegments.targets)")
        has_text = audio.target_lengths > 0
        if not bool(has_text.any()):
            raise ValueError("CTC alignment: no segment in the batch has a transcript")
        idx = torch.nonzero(has_text).squeeze(1)
        return self.projector.loss(audio.frames[idx], audio.lengths()[idx], audio.targets[idx],
                                   audio.target_lengths[idx])

    def forward(
        self,
        batch: SpeechBatch,
        cache: Cache | None = None,
        use_cache: bool = False,
        output_router_logits: bool = False,
        logits: str = "all",
        text_only: bool = False,
        align_only: bool = False,
    ) -> SpeechLMOutput:
        """Logits and, when ``batch.labels`` is set, losses.

        ``align_only`` (S1 with a hearing interface): only the CTC head's loss on the batch's user audio; the
        LM does not run. With the projector interface S1 aligns through the LM loss, so the flag is ignored.

        ``logits``: ``"all"`` positions, only the ``"last"`` one (decoding), or ``"none"`` (training: the
        losses are then computed from hidden states at labelled positions only, over each stream's own head
        rows — same values, a fraction of the head's cost). ``text_only``: see :meth:`embed`.

        With a cache, ``batch`` holds only the new positions and ``attention_mask`` covers either past + new
        positions (HF convention) or just the new ones when nothing is padded.
        """
        if align_only and self.hears_text:
            ctc = self._ctc_loss(batch.audio.to(self.device) if batch.audio is not None else None)
            return SpeechLMOutput(ctc + self._unused_term(exclude=self.projector), {"ctc": ctc.detach()}, None)
        inputs = self.embed(batch, text_only=text_only)
        b, t = inputs.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        mask = self._backbone_mask(batch.attention_mask, b, t, past)

        want_aux = batch.labels is not None and self.training and self.cfg.backbone.aux_loss_alpha > 0
        calls: list[RouterOutput] = []
        routers = [moe.router for moe in self.moe_layers()]
        collect = attach_sink(routers, calls.append) if (want_aux or output_router_logits) else nullcontext()
        if logits not in LOGITS_MODES:
            raise ValueError(f"logits={logits!r}; choose one of {LOGITS_MODES}")
        if logits == "none" and batch.labels is None:
            raise ValueError('logits="none" needs labels: there would be nothing to return')
        with collect:
            out = self.backbone.model(inputs_embeds=inputs, attention_mask=mask, cache=cache, use_cache=use_cache)
        hidden = out.last_hidden_state
        head = self.backbone.get_output_embeddings().weight
        full = None if logits == "none" else (hidden[:, -1:] if logits == "last" else hidden) @ head.T

        losses: dict[str, torch.Tensor] = {}
        loss = aux = None
        if batch.labels is not None:
            if full is not None and logits == "all":
                losses = stream_losses(full, batch.labels, self.layout)
            else:
                losses = stream_losses_from_hidden(hidden, head, batch.labels, self.layout)
            loss = combine_losses(losses, self.layout, self.cfg.loss)
            if want_aux and calls:
                new_mask = batch.attention_mask[:, -t:] if batch.attention_mask is not None else None
                aux = sum(
                    sequence_aux_loss(c.probs.view(b, t, -1), c.topk_indices.view(b, t, -1), new_mask,
                                      self.cfg.backbone.aux_loss_alpha)
                    for c in calls
                )
                loss = aux if loss is None else loss + aux
            no_audio = batch.audio is None or batch.audio.n_positions.numel() == 0
            if loss is not None and self.training and no_audio:
                loss = loss + self._unused_audio_term()
        router_logits = tuple(c.logits for c in calls) if output_router_logits else None
        cache_out = out.cache if use_cache else None
        return SpeechLMOutput(loss, losses, full, cache_out, router_logits, aux)

    def _backbone_mask(self, attention_mask: torch.Tensor | None, b: int, t: int, past: int) -> torch.Tensor | None:
        if attention_mask is None:
            return None
        if attention_mask.shape == (b, past + t):
            return attention_mask
        if attention_mask.shape == (b, t):
            if past == 0:
                return attention_mask
            if bool(attention_mask.all()):
                return None
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} must cover the new positions ({t}) or past + new "
            f"({past + t}); with a cache and padding pass the full mask"
        )

    def _unused_audio_term(self) -> torch.Tensor | float:
        """0 × the trainable projector parameters: keeps them in the graph for text-only batches (the reference's
        zero-weighted dummy pass, which DeepSpeed needs to see a gradient for every trainable parameter)."""
        params = [p for p in self.projector.parameters() if p.requires_grad]
        if not params:
            return 0.0
        return 0.0 * sum(p.sum() for p in params)

    def _unused_term(self, exclude: nn.Module) -> torch.Tensor | float:
        """0 × every trainable parameter outside ``exclude`` (the same dummy pass for a loss that skips the LM)."""
        skip = {id(p) for p in exclude.parameters()}
        params = [p for p in self.parameters() if p.requires_grad and id(p) not in skip]
        if not params:
            return 0.0
        return 0.0 * sum(p.sum() for p in params)


def _audio_interface(cfg: SpeechLMConfig, hidden_size: int) -> AudioProjector | CTCHead:
    """The trained part of the speech input path (``ParamGroup.PROJECTOR``): a frame projector, or a CTC head
    over the LM's text vocabulary whose heard units the LM reads as text."""
    if cfg.audio_input.hears_text:
        return CTCHead(cfg.audio_input, cfg.layout.text_vocab_size)
    return AudioProjector(cfg.audio_input, hidden_size)


def load_hearing(path: str | Path) -> tuple[CTCHead, float] | None:
    """The CTC head (and its temperature) of a saved speech LM without loading the backbone, or None when the
    directory is not a speech LM or its interface is the frame projector."""
    meta_file = Path(path) / CONFIG_FILE
    if not meta_file.is_file():
        return None
    cfg = SpeechLMConfig.from_dict(json.loads(meta_file.read_text())["config"])
    if not cfg.audio_input.hears_text:
        return None
    head = CTCHead(cfg.audio_input, cfg.layout.text_vocab_size)
    head.load_state_dict(load_file(str(Path(path) / "projector.safetensors")))
    return head.float().eval(), cfg.audio_input.ctc_temperature
