"""Stage specs: what each training stage trains, how it routes, on which data (paper.md §3, §5, §9).

A *stage* (what ``train_stage`` runs and DVC tracks as ``models/stages/<name>``) is a plan of one or more
*phases*; each phase is a :class:`StageSpec` that the one runner executes. DeepTalk's own stages have one
phase each and chain through ``init_from``; a baseline that mirrors the three-phase recipe (``fixed``,
``moextend``, ``strict``, ``random``, ``plain-staged`` and the S2a ablations) runs its phases in sequence
inside its own directory.

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
from deeptalk.model.experts import RoutingMode
from deeptalk.model.freezing import ParamGroup as G
from deeptalk.model.routers import MASKED_GATES
from deeptalk.training.config import ABLATION_PARTS, TrainingConfig

# Where a phase's expert split comes from.
SPLIT_NONE = "none"  # no split (routing unrestricted, no expert-group freezing)
SPLIT_PROFILED = "profiled"  # cfg.paths.expert_split, written by profile_experts with training.split_rule
SPLIT_FIXED = "fixed"  # training.fixed_split applied to the profiled load statistics
SPLIT_ADDED = "added"  # MoExtend: the experts added by add_speech_experts are the speech experts
SPLIT_INHERIT = "inherit"  # keep the split saved with the init checkpoint
SPLIT_RANDOM = "random"  # as many speech experts per layer as the profiled split, drawn at random with the seed
SPLIT_SOURCES = (SPLIT_NONE, SPLIT_PROFILED, SPLIT_FIXED, SPLIT_ADDED, SPLIT_INHERIT, SPLIT_RANDOM)

BACKBONE_ALL = frozenset({
    G.EMBEDDINGS, G.ATTENTION, G.DENSE_LAYER0, G.SPEECH_EXPERTS, G.TEXT_EXPERTS, G.SHARED_EXPERTS,
    G.ROUTERS, G.NORMS,
})
# paper.md §2.2: in a single-modality phase the routers, shared experts, layer 0, norms and the (tied)
# embeddings keep training; MoE attention and the other expert group are frozen.
_SINGLE_MODALITY_SHARED = frozenset({G.ROUTERS, G.SHARED_EXPERTS, G.DENSE_LAYER0, G.NORMS, G.EMBEDDINGS})
# the S2a ablations: each shared part frozen alone (training.config.ABLATION_PARTS names them)
PART_GROUPS = {"embeddings": G.EMBEDDINGS, "shared": G.SHARED_EXPERTS, "routers": G.ROUTERS,
               "layer0": G.DENSE_LAYER0, "norms": G.NORMS}


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
class StageSpec:
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
    description: str = ""

    def __post_init__(self) -> None:
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
class StagePlan:
    """A trained artefact: its phases in order; the last phase's weights are the stage's output."""

    name: str
    phases: tuple[StageSpec, ...] = field(default_factory=tuple)

    @property
    def init_from(self) -> str:
        return self.phases[0].init_from


# ---- data mixes -----------------------------------------------------------------------------------------
TEXT_LM = DataMix((("text", 3.0), ("tqa", 1.0)))
ASR = DataMix((("asr", 1.0),))
SPEECH_OUT = DataMix((("aqa", 3.0), ("tts", 1.0)))  # speech in → text + speech out (reference: AQACONVA)
TEXT_OUT = DataMix((("rqa", 2.0), ("tqa", 1.0)))  # text answers, user spoken with p=0.7 (RQACONV)
JOINT = DataMix((("aqa", 3.0), ("tts", 1.0), ("rqa", 2.0), ("tqa", 1.0), ("asr", 1.0)))  # AudioQA ×3 + text


def _s2a(name: str, init: str, split: str, trainable: frozenset[G] | None = None, add: bool = False,
         gate: str = "served") -> StageSpec:
    if split == SPLIT_ADDED:  # MoExtend freezes the original router with the original experts (paper.md §5)
        default = (_SINGLE_MODALITY_SHARED - {G.ROUTERS}) | {G.ADDED_EXPERTS}
    else:
        default = _SINGLE_MODALITY_SHARED | {G.SPEECH_EXPERTS}
    return StageSpec(
        name=name, budget="s2a", init_from=init, split=split, routing=RoutingMode.SPEECH_ONLY,
        trainable=trainable or default, data=SPEECH_OUT, add_experts=add, masked_gate=gate,
        description="speech experts: text experts masked (−inf) and frozen, MoE attention frozen",
    )


def _s2b(name: str, init: str, trainable: frozenset[G] | None = None, gate: str = "served") -> StageSpec:
    return StageSpec(
        name=name, budget="s2b", init_from=init, split=SPLIT_INHERIT, routing=RoutingMode.TEXT_ONLY,
        trainable=trainable or (_SINGLE_MODALITY_SHARED | {G.TEXT_EXPERTS}), data=TEXT_OUT, masked_gate=gate,
        description="text experts: speech experts masked and frozen, on text-output data (user spoken p=0.7)",
    )


def _s3(name: str, init: str, added: bool = False) -> StageSpec:
    return StageSpec(
        name=name, budget="s3", init_from=init, split=SPLIT_INHERIT, routing=RoutingMode.NONE,
        trainable=BACKBONE_ALL | ({G.ADDED_EXPERTS} if added else frozenset()), data=JOINT,
        description="joint: no mask; everything but the audio encoder and projector",
    )


def _chain(name: str, split: str = SPLIT_PROFILED, s2a_trainable: frozenset[G] | None = None,
           gate: str = "served") -> StagePlan:
    """DeepTalk's S2a → S2b → S3 inside stage ``name`` (a baseline or ablation that varies one choice)."""
    return StagePlan(name, (_s2a(f"{name}/s2a", "s1", split, trainable=s2a_trainable, gate=gate),
                            _s2b(f"{name}/s2b", f"{name}/s2a", gate=gate), _s3(f"{name}/s3", f"{name}/s2b")))


def _unmasked(name: str, init: str, budget: str, data: DataMix) -> StageSpec:
    return StageSpec(name=name, budget=budget, init_from=init, split=SPLIT_NONE, routing=RoutingMode.NONE,
                     trainable=BACKBONE_ALL, data=data,
                     description=f"plain-staged: {budget}'s budget and data, no mask, nothing frozen")


def stage_plans(training: TrainingConfig) -> dict[str, StagePlan]:
    """Every named stage, baseline and ablation (``training.baselines`` only says which ones ``compare`` trains
    by default). The pretrained Whisper encoder is frozen in every stage (paper.md §3), as at paper scale."""
    plans = {
        "text_pretrain": StagePlan("text_pretrain", (StageSpec(
            name="text_pretrain", budget="text_pretrain", init_from="new", split=SPLIT_NONE,
            routing=RoutingMode.NONE, trainable=BACKBONE_ALL, data=TEXT_LM, text_only_input=True,
            description="the 'original LLM': a plain text LM with knowledge worth keeping (tiny/small only)",
        ),)),
        "s1": StagePlan("s1", (StageSpec(
            name="s1", budget="s1", init_from="base", split=SPLIT_NONE, routing=RoutingMode.NONE,
            trainable=frozenset({G.PROJECTOR, G.NEW_EMBEDDING_ROWS}),
            data=ASR,
            description="align: projector and new embedding rows; pretrained Whisper encoder and backbone frozen",
        ),)),
        "s2a": StagePlan("s2a", (_s2a("s2a", "s1", SPLIT_PROFILED),)),
        "s2b": StagePlan("s2b", (_s2b("s2b", "s2a"),)),
        "s3": StagePlan("s3", (_s3("s3", "s2b"),)),
        "plain": StagePlan("plain", (StageSpec(
            name="plain", budget="plain", init_from="s1", split=SPLIT_NONE, routing=RoutingMode.NONE,
            trainable=BACKBONE_ALL, data=JOINT,
            description="native MLLM baseline: no split, all experts trained jointly from S1",
        ),)),
        "fixed": _chain("fixed", SPLIT_FIXED),
        "moextend": StagePlan("moextend", (
            _s2a("moextend/s2a", "s1", SPLIT_ADDED, add=True),
            _s2b("moextend/s2b", "moextend/s2a"),
            _s3("moextend/s3", "moextend/s2b", added=True),
        )),
        # STACK.md "strict": only the expert group and the new embedding/head rows ever train.
        "strict": StagePlan("strict", (
            _s2a("strict/s2a", "s1", SPLIT_PROFILED, trainable=frozenset({G.SPEECH_EXPERTS, G.NEW_EMBEDDING_ROWS})),
            _s2b("strict/s2b", "strict/s2a", trainable=frozenset({G.TEXT_EXPERTS, G.NEW_EMBEDDING_ROWS})),
        )),
        "random": _chain("random", SPLIT_RANDOM),
        # DeepTalk's schedule (S2a, S2b, S3 budgets, lrs and data mixes, in order) with no mask, nothing frozen
        "plain-staged": StagePlan("plain-staged", (
            _unmasked("plain-staged/s2a", "s1", "s2a", SPEECH_OUT),
            _unmasked("plain-staged/s2b", "plain-staged/s2a", "s2b", TEXT_OUT),
            _unmasked("plain-staged/s3", "plain-staged/s2b", "s3", JOINT),
        )),
        # the reference's gate under a mask (renormalised over the allowed experts; deeptalk.model.routers)
        "renormalised-gate": _chain("renormalised-gate", gate="renormalised"),
        **{f"s2a-frozen-{part}": _chain(f"s2a-frozen-{part}", s2a_trainable=(
            _SINGLE_MODALITY_SHARED - {PART_GROUPS[part]}) | {G.SPEECH_EXPERTS}) for part in ABLATION_PARTS},
    }
    return plans



def get_plan(name: str, training: TrainingConfig) -> StagePlan:
    plans = stage_plans(training)
    if name not in plans:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(plans)}")
    return plans[name]
