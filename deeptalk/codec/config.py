"""Codec hyper-parameters, one frozen dataclass for every codec kind.

The default is SNAC 24 kHz's geometry (small and paper): 512-sample hops (46.9 Hz) grouped in threes of residual
levels with strides 4 / 2 / 1 hops, i.e. 1 + 2 + 4 = 7 codes per 85.3 ms coarse frame (``paper.md`` §1.3).
The tiny preset sizes its codebooks to its data instead: two levels (strides 2 / 1, 1 + 2 = 3 codes per 42.7 ms)
of 1024 codes (``configs/profiles/tiny.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass

from deeptalk.presets import preset

CODEC_KINDS = ("embedded", "snac")


@dataclass(frozen=True)
class CodecConfig:
    kind: str = "embedded"  # "embedded" (fitted in the pipeline) | "snac" (local checkpoint)
    sample_rate: int = 24000
    hop: int = 512  # samples per fine frame (SNAC 24 kHz's hop too)
    level_strides: tuple[int, ...] = (4, 2, 1)  # fine frames per code on each residual level
    codebook_size: int = 4096  # codes per level (the reference's audio vocabulary)
    # ---- embedded: log-mel analysis -------------------------------------------------------------------
    n_fft: int = 2048  # 4 × hop: every output sample is covered by exactly 4 frames
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 12000.0
    peak_level: float = 0.9  # waveforms are peak-normalised before analysis (TTS voices differ in gain)
    log_floor: float = -7.0  # natural-log magnitude floor; silence maps here
    # ---- embedded: residual k-means -------------------------------------------------------------------
    kmeans_iters: int = 12
    kmeans_max_frames: int = 60_000  # frames sampled per level for k-means (bounds the fit time)
    fit_max_seconds: float = 1800.0  # audio read for the fit, at most
    fit_speakers: tuple[str, ...] = ()  # extra voices to fit on besides the assistant's spoken answers
    # ---- embedded: decoder ----------------------------------------------------------------------------
    decoder_context: int = 4  # frames either side fed to the learned mel→spectrum decoder (4 beat 2 and 6)
    decoder_ridge: float = 1e-1  # ridge penalty of that decoder (closed-form least squares)
    griffin_lim_iters: int = 32
    griffin_lim_momentum: float = 0.0  # "fast Griffin-Lim" momentum; 0 measured best on blocky spectra
    phase_init: str = "rtisi"  # new frames continue the phase of the frames before them ("random": noise)
    # ---- streaming ------------------------------------------------------------------------------------
    chunk_frames: int = 8  # fine frames per Griffin-Lim chunk (2 coarse frames, 171 ms)
    left_context_frames: int = 3  # emitted frames frozen as the chunk's boundary (3 overlap its first frame)
    lookahead_frames: int = 2  # frames past the chunk needed before its audio is final (OLA of n_fft=4·hop)
    # ---- snac ------------------------------------------------------------------------------------------
    checkpoint: str | None = None  # local SNAC directory (config.json + pytorch_model.bin)
    snac_context_frames: int = 4  # coarse frames of context either side of a streamed SNAC chunk
    snac_chunk_frames: int = 4  # coarse frames decoded per streamed SNAC chunk

    def __post_init__(self) -> None:
        if self.kind not in CODEC_KINDS:
            raise ValueError(f"codec kind {self.kind!r} unknown; expected one of {CODEC_KINDS}")
        object.__setattr__(self, "level_strides", tuple(int(s) for s in self.level_strides))
        object.__setattr__(self, "fit_speakers", tuple(self.fit_speakers))
        strides = self.level_strides
        if (
            not strides
            or strides[-1] != 1
            or any(strides[i] % strides[i + 1] for i in range(len(strides) - 1))
        ):
            raise ValueError(
                f"level_strides must decrease to 1 with each dividing the previous, got {strides}"
            )
        if self.kind == "embedded" and self.n_fft != 4 * self.hop:
            raise ValueError(f"embedded codec needs n_fft == 4 * hop, got n_fft={self.n_fft} hop={self.hop}")
        if self.chunk_frames % self.frames_per_coarse:
            raise ValueError(
                f"chunk_frames {self.chunk_frames} must be a multiple of {self.frames_per_coarse}"
            )
        for name in ("codebook_size", "n_mels", "griffin_lim_iters", "chunk_frames", "snac_chunk_frames"):
            if getattr(self, name) <= 0:
                raise ValueError(f"codec {name} must be positive, got {getattr(self, name)}")
        if self.lookahead_frames < 2 or self.left_context_frames < 3:
            raise ValueError(
                "lookahead_frames must be >= 2 and left_context_frames >= 3 (overlap-add of 4 hops)"
            )
        if self.phase_init not in ("rtisi", "random"):
            raise ValueError(f"phase_init {self.phase_init!r} unknown; expected 'rtisi' or 'random'")
        if self.kind == "snac" and not self.checkpoint:
            raise ValueError("codec kind 'snac' needs `checkpoint` (a local SNAC directory)")

    @property
    def frames_per_coarse(self) -> int:
        """Fine (hop-rate) frames in one coarse frame = one column of codes."""
        return self.level_strides[0]

    @property
    def n_streams(self) -> int:
        """Rows of the code matrix: sum over levels of codes per coarse frame (1 + 2 + 4 = 7)."""
        return sum(self.frames_per_coarse // s for s in self.level_strides)

    @property
    def samples_per_coarse(self) -> int:
        return self.hop * self.frames_per_coarse

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.samples_per_coarse

    @classmethod
    def for_profile(cls, profile: str) -> CodecConfig:
        """The ``codec`` section of ``configs/profiles/<profile>.yaml``."""
        return preset(cls, "codec", profile)
