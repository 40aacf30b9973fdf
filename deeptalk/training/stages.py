"""The stage chain: every training stage in one ordered table (:data:`CHAIN`), and what each trains, how it
routes, on which data (paper.md §3, §5, §9).

Vocabulary (docs/architecture.md): a *step* is a unit of the pipeline (``deeptalk.steps.StepSpec``: a DVC
stage, a Prefect task); a *stage* (:class:`Stage`) is a trained model: one row of the chain, trained by one step
into one directory; a *phase* (:class:`PhaseSpec`) is one optimiser run inside a stage, what the one runner
executes. DeepTalk's own stages have one phase each and chain through ``init_from``; a baseline that mirrors the
three-phase recipe (``fixed``, ``moextend``, ``strict``, ``random``, ``plain-staged`` and the S2a ablations) runs
its phases in sequence inside its own directory. The step registry, ``dvc.yaml``, the Prefect flows, ``compare``,
the GPU smoke script and the training-log report all read the chain from here.

Controls that isolate the cause of a text drop (issue 11): ``plain-staged`` is DeepTalk's exact schedule
(budgets, learning rates, data mixes in the same order) with no mask and nothing frozen; ``random`` is
DeepTalk with as many speech experts per layer as the profiled split, chosen at random (does the profiling
matter?); ``s2a-frozen-<part>`` is DeepTalk with one shared part (``ABLATION_PARTS``) frozen in S2a. How long and how fast a phase
trains comes from ``cfg.training`` (``budget``); nothing here is read from or written to a checkpoint config.

Data tasks (``deeptalk.data.schema.TASKS``): ``asr`` speech → transcript; ``tts`` text → speech;
``aqa`` speech question → text + speech answer; ``tqa`` text question → text answer; ``rqa`` question whose
user turn is spoken with probability ``user_speech_prob`` (0.7, the reference's RQA) → text answer;
``text`` plain knowledge text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deeptalk.data.schema import TASKS
from deeptalk.model.switches import MASKED_GATES, RoutingMode
from deeptalk.model.switches import ParamGroup as G

# Where a phase's expert split comes from.
SPLIT_NONE = "none"  # no split (routing unrestricted, no expert-group freezing)
SPLIT_PROFILED = "profiled"  # cfg.paths.expert_split, written by profile_experts with training.split_rule
SPLIT_FIXED = "fixed"  # training.fixed_split applied to the profiled load statistics
SPLIT_ADDED = "added"  # MoExtend: the experts added by add_speech_experts are the speech experts
SPLIT_INHERIT = "inherit"  # keep the split saved with the init checkpoint
SPLIT_RANDOM = "random"  # as many speech experts per layer as the profiled split, drawn at random with the seed
# What a phase minimises: "lm" the stream losses; "align" the audio interface's alignment loss — CTC on the
# transcript for a hearing head (deeptalk.model.hearing), the LM's own loss for the frame projector.
OBJECTIVES = ("lm", "align")
SPLIT_SOURCES = (SPLIT_NONE, SPLIT_PROFILED, SPLIT_FIXED, SPLIT_ADDED, SPLIT_INHERIT, SPLIT_RANDOM)

BACKBONE_ALL = frozenset({
    G.EMBEDDINGS, G.ATTENTION, G.DENSE_LAYER0, G.SPEECH_EXPERTS, G.TEXT_EXPERTS, G.SHARED_EXPERTS,
    G.ROUTERS, G.NORMS,
})
# paper.md §2.2: in a single-modality phase the routers, shared experts, layer 0, norms and the (tied)
# embeddings keep training; MoE attention and the other expert group are frozen.
_SINGLE_MODALITY_SHARED = frozenset({G.ROUTERS, G.SHARED_EXPERTS, G.DENSE_LAYER0, G.NORMS, G.EMBEDDINGS})
# the S2a ablations (``s2a-frozen-<part>``): each shared part frozen alone
PART_GROUPS = {"embeddings": G.EMBEDDINGS, "shared": G.SHARED_EXPERTS, "routers": G.ROUTERS,
               "layer0": G.DENSE_LAYER0, "norms": G.NORMS}
ABLATION_PARTS = tuple(PART_GROUPS)

# Which systems use a stage (the chain table's last column).
SHARED = "shared"  # every system of a seed starts from it (text_pretrain, S1), trained once per seed
DEEPTALK = "deeptalk"  # DeepTalk's own stages after the expert split
COMPARED = "compared"  # a baseline of the paper's comparison table
ABLATION = "ablation"  # isolates one cause (the reference's gate, one shared part frozen in S2a)
ROLES = (SHARED, DEEPTALK, COMPARED, ABLATION)


@dataclass(frozen=True)
class DataMix:
    """Training tasks and their sampling weights (a batch element picks a task by weight)."""

    weights: tuple[tuple[str, float], ...]
    user_speech_prob: float = 0.7  # RQA user turns given as speech with this probability (paper.md §1.4)

    def __post_init__(self) -> None:
        unknown = sorted({t for t, _ in self.weights} - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; expected some of {TASKS}")
        if not self.weights or any(w <= 0 for _, w in self.weights):
            raise ValueError(f"a data mix needs tasks with positive weights, got {self.weights}")

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.weights)


@dataclass(frozen=True)
class PhaseSpec:
    name: str  # phase name; also its directory under the stage ("s2a", "fixed/s2b")
    budget: str  # TrainingConfig budget: text_pretrain | s1 | s2a | s2b | s3 | plain
    init_from: str  # "new" (fresh backbone), "base" (cfg.paths.base), a stage name, or an earlier phase
    trainable: frozenset[G]
    routing: RoutingMode
    split: str
    data: DataMix
    schedule: str = "cosine"
    warmup_ratio: float | None = None  # None: cfg.training.warmup_ratio (3 %, as the reference)
    deepspeed_config: str | None = None  # None: cfg.training.deepspeed_config
    add_experts: bool = False  # MoExtend: add cfg.training.moextend_experts experts per layer first
    text_only_input: bool = False  # embed the text stream alone (the original text LLM; see SpeechLM.embed)
    masked_gate: str = "served"  # top-k weights under a mask: served | renormalised (deeptalk.model.routers)
    objective: str = "lm"  # lm: the stream losses | align: the audio interface's own alignment (S1; see SpeechLM)
    description: str = ""

    def data_for(self, hears_text: bool) -> DataMix:
        """The data this phase trains on: an ``align`` phase of a model with a hearing head reads every spoken
        turn (HEARD_SPEECH); otherwise ``data``."""
        return HEARD_SPEECH if self.objective == "align" and hears_text else self.data

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"{self.name}: unknown objective {self.objective!r}; use one of {OBJECTIVES}")
        if self.masked_gate not in MASKED_GATES:
            raise ValueError(f"{self.name}: unknown masked_gate {self.masked_gate!r}; use one of {MASKED_GATES}")
        object.__setattr__(self, "trainable", frozenset(G(g) for g in self.trainable))
        object.__setattr__(self, "routing", RoutingMode(self.routing))
        if self.split not in SPLIT_SOURCES:
            raise ValueError(f"{self.name}: unknown split source {self.split!r}; use one of {SPLIT_SOURCES}")
        if self.routing is not RoutingMode.NONE and self.split == SPLIT_NONE:
            raise ValueError(f"{self.name}: routing {self.routing.value} needs an expert split")
        if not self.trainable:
            raise ValueError(f"{self.name}: a stage must train something")
        if (G.SPEECH_EXPERTS in self.trainable) != (G.TEXT_EXPERTS in self.trainable) and self.split == SPLIT_NONE:
            raise ValueError(f"{self.name}: training one expert group needs an expert split")


@dataclass(frozen=True)
class Stage:
    """One row of the chain: a trained model, the step that trains it, where it goes, its phases in order (the
    last phase's weights are the output) and which systems use it."""

    name: str
    role: str  # one of ROLES
    step: str = ""  # the pipeline step that trains it (default ``train_<name>``)
    out: str = ""  # its directory under the project root (default ``models/stages/<name>``)
    phases: tuple[PhaseSpec, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"stage {self.name}: unknown role {self.role!r}; use one of {ROLES}")
        if not self.phases:
            raise ValueError(f"stage {self.name} has no phase")
        object.__setattr__(self, "step", self.step or f"train_{self.name}")
        object.__setattr__(self, "out", self.out or f"models/stages/{self.name}")

    @property
    def init_from(self) -> str:
        return self.phases[0].init_from

    @property
    def budgets(self) -> tuple[str, ...]:
        """The ``training`` budgets its phases train at (``training.<budget>``), in order."""
        return tuple(dict.fromkeys(phase.budget for phase in self.phases))


# ---- data mixes -----------------------------------------------------------------------------------------
TEXT_LM = DataMix((("text", 3.0), ("tqa", 1.0)))
ASR = DataMix((("asr", 1.0),))
# a hearing head aligns on every spoken user turn (what was said is its CTC target), about in proportion to the
# clips: held-out CTC WER 0.34 vs 0.43 on ASR clips alone at tiny (README, "Listening")
HEARD_SPEECH = DataMix((("asr", 4.0), ("aqa", 1.0), ("rqa", 1.0)), user_speech_prob=1.0)
SPEECH_OUT = DataMix((("aqa", 3.0), ("tts", 1.0)))  # speech in → text + speech out (reference: AQACONVA)
TEXT_OUT = DataMix((("rqa", 2.0), ("tqa", 1.0)))  # text answers, user spoken with p=0.7 (RQACONV)
JOINT = DataMix((("aqa", 3.0), ("tts", 1.0), ("rqa", 2.0), ("tqa", 1.0), ("asr", 1.0)))  # AudioQA ×3 + text


def _s2a(name: str, init: str, split: str, trainable: frozenset[G] | None = None, add: bool = False,
         gate: str = "served") -> PhaseSpec:
    if split == SPLIT_ADDED:  # MoExtend freezes the original router with the original experts (paper.md §5)
        default = (_SINGLE_MODALITY_SHARED - {G.ROUTERS}) | {G.ADDED_EXPERTS}
    else:
        default = _SINGLE_MODALITY_SHARED | {G.SPEECH_EXPERTS}
    return PhaseSpec(
        name=name, budget="s2a", init_from=init, split=split, routing=RoutingMode.SPEECH_ONLY,
        trainable=trainable or default, data=SPEECH_OUT, add_experts=add, masked_gate=gate,
        description="speech experts: text experts masked (−inf) and frozen, MoE attention frozen",
    )


def _s2b(name: str, init: str, trainable: frozenset[G] | None = None, gate: str = "served") -> PhaseSpec:
    return PhaseSpec(
        name=name, budget="s2b", init_from=init, split=SPLIT_INHERIT, routing=RoutingMode.TEXT_ONLY,
        trainable=trainable or (_SINGLE_MODALITY_SHARED | {G.TEXT_EXPERTS}), data=TEXT_OUT, masked_gate=gate,
        description="text experts: speech experts masked and frozen, on text-output data (user spoken p=0.7)",
    )


def _s3(name: str, init: str, added: bool = False) -> PhaseSpec:
    return PhaseSpec(
        name=name, budget="s3", init_from=init, split=SPLIT_INHERIT, routing=RoutingMode.NONE,
        trainable=BACKBONE_ALL | ({G.ADDED_EXPERTS} if added else frozenset()), data=JOINT,
        description="joint: no mask; everything but the audio encoder and projector",
    )


def _chain(name: str, split: str = SPLIT_PROFILED, s2a_trainable: frozenset[G] | None = None,
           gate: str = "served") -> tuple[PhaseSpec, ...]:
    """DeepTalk's S2a → S2b → S3 as the phases of stage ``name`` (a baseline or ablation that varies one choice)."""
    return (_s2a(f"{name}/s2a", "s1", split, trainable=s2a_trainable, gate=gate),
            _s2b(f"{name}/s2b", f"{name}/s2a", gate=gate), _s3(f"{name}/s3", f"{name}/s2b"))


def _unmasked(name: str, init: str, budget: str, data: DataMix) -> PhaseSpec:
    return PhaseSpec(name=name, budget=budget, init_from=init, split=SPLIT_NONE, routing=RoutingMode.NONE,
                     trainable=BACKBONE_ALL, data=data,
                     description=f"plain-staged: {budget}'s budget and data, no mask, nothing frozen")


# The chain, in training order: DeepTalk's stages, then the baselines and ablations. The pretrained Whisper
# encoder is frozen in every stage (paper.md §3), as at paper scale. Columns: name, which systems use it (role),
# the step that trains it and its directory (defaults train_<name>, models/stages/<name>), its phases.
CHAIN: tuple[Stage, ...] = (
    Stage("text_pretrain", SHARED, step="text_pretrain", out="models/base", phases=(PhaseSpec(
        name="text_pretrain", budget="text_pretrain", init_from="new", split=SPLIT_NONE,
        routing=RoutingMode.NONE, trainable=BACKBONE_ALL, data=TEXT_LM, text_only_input=True,
        description="the 'original LLM': a plain text LM with knowledge worth keeping (tiny/small only)",
    ),)),
    Stage("s1", SHARED, step="align", phases=(PhaseSpec(
        name="s1", budget="s1", init_from="base", split=SPLIT_NONE, routing=RoutingMode.NONE,
        trainable=frozenset({G.PROJECTOR, G.NEW_EMBEDDING_ROWS}),
        data=ASR, objective="align",
        description="align: projector and new embedding rows (a hearing head: CTC on the transcript); "
                    "pretrained Whisper encoder and backbone frozen",
    ),)),
    Stage("s2a", DEEPTALK, phases=(_s2a("s2a", "s1", SPLIT_PROFILED),)),
    Stage("s2b", DEEPTALK, phases=(_s2b("s2b", "s2a"),)),
    Stage("s3", DEEPTALK, phases=(_s3("s3", "s2b"),)),
    Stage("plain", COMPARED, phases=(PhaseSpec(
        name="plain", budget="plain", init_from="s1", split=SPLIT_NONE, routing=RoutingMode.NONE,
        trainable=BACKBONE_ALL, data=JOINT,
        description="native MLLM baseline: no split, all experts trained jointly from S1",
    ),)),
    Stage("fixed", COMPARED, phases=_chain("fixed", SPLIT_FIXED)),
    Stage("moextend", COMPARED, phases=(
        _s2a("moextend/s2a", "s1", SPLIT_ADDED, add=True),
        _s2b("moextend/s2b", "moextend/s2a"),
        _s3("moextend/s3", "moextend/s2b", added=True),
    )),
    # STACK.md "strict": only the expert group and the new embedding/head rows ever train.
    Stage("strict", COMPARED, phases=(
        _s2a("strict/s2a", "s1", SPLIT_PROFILED, trainable=frozenset({G.SPEECH_EXPERTS, G.NEW_EMBEDDING_ROWS})),
        _s2b("strict/s2b", "strict/s2a", trainable=frozenset({G.TEXT_EXPERTS, G.NEW_EMBEDDING_ROWS})),
    )),
    Stage("random", COMPARED, phases=_chain("random", SPLIT_RANDOM)),
    # DeepTalk's schedule (S2a, S2b, S3 budgets, lrs and data mixes, in order) with no mask, nothing frozen
    Stage("plain-staged", COMPARED, phases=(
        _unmasked("plain-staged/s2a", "s1", "s2a", SPEECH_OUT),
        _unmasked("plain-staged/s2b", "plain-staged/s2a", "s2b", TEXT_OUT),
        _unmasked("plain-staged/s3", "plain-staged/s2b", "s3", JOINT),
    )),
    # the reference's gate under a mask (renormalised over the allowed experts; deeptalk.model.routers)
    Stage("renormalised-gate", ABLATION, phases=_chain("renormalised-gate", gate="renormalised")),
    *(Stage(f"s2a-frozen-{part}", ABLATION, phases=_chain(f"s2a-frozen-{part}", s2a_trainable=(
        _SINGLE_MODALITY_SHARED - {PART_GROUPS[part]}) | {G.SPEECH_EXPERTS})) for part in ABLATION_PARTS),
)
BY_NAME = {stage.name: stage for stage in CHAIN}
PROFILED_FROM = "s1"  # profile_experts measures the expert load of this stage's model (the split's source)


def names(*roles: str) -> tuple[str, ...]:
    """The chain's stage names with one of ``roles``, in chain order."""
    return tuple(stage.name for stage in CHAIN if stage.role in roles)


DEEPTALK_STAGES = names(DEEPTALK)  # s2a, s2b, s3
COMPARED_STAGES = names(COMPARED)  # the comparison table's baselines
BASELINES = names(COMPARED, ABLATION)  # everything trained only when asked


def get_stage(name: str) -> Stage:
    if name not in BY_NAME:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(BY_NAME)}")
    return BY_NAME[name]
