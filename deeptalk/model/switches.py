"""The switches a training phase sets on the model, as plain values: which parameter groups train
(:class:`ParamGroup`, applied by :mod:`deeptalk.model.freezing`), which expert group the routers may choose from
(:class:`RoutingMode`, masks by :mod:`deeptalk.model.experts`) and how gate weights are computed under a mask
(:data:`MASKED_GATES`, :mod:`deeptalk.model.routers`).

No torch here: the stage table (``deeptalk.training.stages``), and with it every step's registry and command line,
names them without loading the network code (DeepSeek-V2's modelling module costs ~3 s per process).
"""

from __future__ import annotations

from enum import Enum


class RoutingMode(str, Enum):
    """Which expert group the routers may choose from (a stage-level switch, as in the reference).

    The mask is global, not per token: under ``SPEECH_ONLY`` every token (speech or text) is routed among the
    speech experts only. Masked experts get logits of −inf before the softmax and the top-k.
    """

    NONE = "none"
    SPEECH_ONLY = "speech_only"
    TEXT_ONLY = "text_only"


class ParamGroup(str, Enum):
    """What a phase trains; which parameters each group covers: :mod:`deeptalk.model.freezing`."""

    EMBEDDINGS = "embeddings"
    NEW_EMBEDDING_ROWS = "new_embedding_rows"
    PROJECTOR = "projector"
    ATTENTION = "attention"
    DENSE_LAYER0 = "dense_layer0"
    SPEECH_EXPERTS = "speech_experts"
    TEXT_EXPERTS = "text_experts"
    SHARED_EXPERTS = "shared_experts"
    ROUTERS = "routers"
    NORMS = "norms"
    ADDED_EXPERTS = "added_experts"


MASKED_GATES = ("served", "renormalised")  # under a routing mask: deeptalk.model.routers' docstring
