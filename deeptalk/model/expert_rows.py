"""Trainable expert rows as parameters of their own, so a stage's optimizer holds state only for what trains.

transformers fuses a layer's routed experts into two tensors (``gate_up_proj [E, 2I, H]``, ``down_proj
[E, H, I]``). When a stage trains some experts only (S2a: the speech experts), ``freezing.apply_trainable``
zeroes the other rows' gradients, but the optimizer, and under ZeRO its fp32 master copy, still hold every row:
12 bytes of Adam state per frozen element too (at paper scale ~186 GB instead of about half of it).

:func:`separate_trainable_experts` turns each such layer's experts into a :class:`RowTrainableExperts`: the fused
tensors stay (frozen, same names, same storage) and the trainable experts' rows become two new parameters,
``gate_up_rows`` / ``down_rows``, that replace the fused tensors in the optimizer groups. Each forward writes
the rows into the fused storage (a copy of the trainable rows only) and hands the experts function the fused
tensor through :class:`_RowsInto`, whose backward returns the gradient of those rows alone. The state dict is
the stock one: a post-hook writes the rows into the fused tensors and drops them, a load pre-hook rebuilds them,
so exports, DeepSpeed checkpoints and ``from_pretrained`` see the model transformers defines.

Used under ZeRO stages 0-2 (the paper's ``zero2_offload``); ZeRO-3 partitions each parameter across ranks and
keeps the masked fused tensors.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

FUSED = ("gate_up_proj", "down_proj")
ROWS = {"gate_up_proj": "gate_up_rows", "down_proj": "down_rows"}


class _RowsInto(torch.autograd.Function):
    """``full`` with rows ``index`` set to ``rows`` (written in place, a view returned); gradient to ``rows`` only."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, full: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        full.index_copy_(0, index, rows.to(full.dtype))
        ctx.save_for_backward(index)
        return full.view_as(full)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


class _Joined:
    """What an experts function reads: the joined fused tensors; every other attribute from the module."""

    def __init__(self, module: nn.Module, **tensors: torch.Tensor) -> None:
        self._module = module
        self.__dict__.update(tensors)

    def __getattr__(self, name: str):
        return getattr(self._module, name)


class RowTrainableExperts:
    """Mixin over a transformers experts class (see the module docstring); made by :func:`_row_class`."""

    trainable_experts: torch.Tensor  # [k] expert indices (a non-persistent buffer)

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
        joined = {name: _RowsInto.apply(getattr(self, ROWS[name]), self._parameters[name], self.trainable_experts)
                  for name in FUSED}
        stock = self._stock_class.forward  # transformers' dispatch to the configured experts implementation
        return stock(_Joined(self, **joined), hidden_states, top_k_index, top_k_weights)

    @torch.no_grad()
    def write_rows(self) -> None:
        """Copy the trainable rows into the fused tensors (they then hold the current weights)."""
        for name in FUSED:
            self._parameters[name].index_copy_(0, self.trainable_experts, getattr(self, ROWS[name]).to(
                self._parameters[name].dtype))


_ROW_CLASSES: dict[type, type] = {}


def _row_class(stock: type) -> type:
    if stock not in _ROW_CLASSES:
        _ROW_CLASSES[stock] = type(f"RowTrainable{stock.__name__}", (RowTrainableExperts, stock),
                                   {"_stock_class": stock})
    return _ROW_CLASSES[stock]


def _state_dict_post_hook(module, state_dict, prefix, local_metadata) -> None:
    module.write_rows()  # the fused entries share the parameters' storage
    for name in FUSED:
        state_dict.pop(prefix + ROWS[name], None)


def _load_pre_hook(module, state_dict, prefix, *args) -> None:
    for name in FUSED:
        full = state_dict.get(prefix + name)
        if full is not None and prefix + ROWS[name] not in state_dict:
            state_dict[prefix + ROWS[name]] = full.index_select(0, module.trainable_experts.to(full.device))


def _make_row_trainable(experts: nn.Module, rows: torch.Tensor) -> nn.Module:
    """A :class:`RowTrainableExperts` sharing ``experts``' fused parameters, training experts ``rows`` (bool [E])."""
    with torch.device("meta"):  # same config, so the same attributes; no storage allocated
        new = _row_class(type(experts))(experts.config)
    new.train(experts.training)
    index = torch.nonzero(rows.cpu()).flatten().to(experts.gate_up_proj.device)
    for name in FUSED:
        full = experts._parameters[name]
        full.requires_grad_(False)
        new._parameters[name] = full
        new._parameters[ROWS[name]] = nn.Parameter(full.detach().index_select(0, index).clone())
    new.register_buffer("trainable_experts", index, persistent=False)
    new.register_state_dict_post_hook(_state_dict_post_hook)
    new.register_load_state_dict_pre_hook(_load_pre_hook)
    return new


def separate_trainable_experts(model: nn.Module, groups: list[dict]) -> list[dict]:
    """Give every MoE layer whose fused experts are partly frozen its trainable rows as own parameters; return
    ``groups`` (``apply_trainable``'s) with the fused tensors replaced by the rows (``weight_decay=0``, as the
    partially frozen group had). Call once, after ``apply_trainable``, before building the optimizer."""
    masks = getattr(model, "_frozen_row_masks", {})
    replaced: dict[int, list[nn.Parameter]] = {}
    for name, module in list(model.named_modules()):
        if not name.endswith(".experts") or isinstance(module, RowTrainableExperts):
            continue
        frozen = masks.get(f"{name}.gate_up_proj")
        if frozen is None or masks.get(f"{name}.down_proj") is None:
            continue
        fused = [module._parameters[n] for n in FUSED]
        new = _make_row_trainable(module, ~frozen)
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, new)
        for n, param in zip(FUSED, fused):
            replaced[id(param)] = [getattr(new, ROWS[n])]
            masks.pop(f"{name}.{n}")  # the fused tensors no longer train at all
    if not replaced:
        return groups
    out, rows = [], []
    for group in groups:
        kept = [p for p in group["params"] if id(p) not in replaced]
        rows += [r for p in group["params"] if id(p) in replaced for r in replaced[id(p)]]
        if kept:
            out.append({**group, "params": kept})
    out.append({"name": "expert_rows", "params": rows, "weight_decay": 0.0})
    n_rows = sum(r.numel() for r in rows)
    n_fused = sum(p.numel() for g in groups for p in g["params"] if id(p) in replaced)
    log.info("trainable expert rows as own parameters: optimizer holds %d of the %d fused expert elements "
             "(%.0f %%)", n_rows, n_fused, 100.0 * n_rows / max(1, n_fused))
    return out
