"""``sorted_mm``: an experts implementation for transformers' fused 3D expert tensors, tuned for CPU training.

Registered through transformers' public ``ExpertsInterface.register`` (the documented extension point used by
``set_experts_implementation``), not by patching any class. ``auto`` picks ``sorted_mm`` on CPU and
transformers' ``grouped_mm`` on accelerators. Token→expert pairs are sorted by expert once; each
active expert then runs two contiguous matmuls on its slice, and a hand-written backward reuses the sort and
the saved activations, so autograd records one node per MoE layer instead of dozens of small gather/scatter
ops. ``benchmarks/moe_layer.py`` compares it with ``eager``, ``batched_mm`` and ``grouped_mm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS, grouped_mm_experts_forward

NAME = "sorted_mm"


class _SortedExperts(torch.autograd.Function):
    """SwiGLU experts over expert-sorted rows: out[n] = Σ_j w[n,j] · down_e(silu(gate_e x) ⊙ up_e x), e = idx[n,j].

    The routing weight is applied to the [S, I] activation (not the [S, H] output), so no [S, H] tensor is
    scaled in either pass; the backward reuses the forward's sort and saved activations.
    """

    @staticmethod
    def forward(ctx, x, gate_up, down, counts, weights_sorted, token_of_row):
        # x [N, H]; gate_up [E, 2I, H]; down [E, H, I]; counts: python list of rows per expert (sorted order);
        # weights_sorted [S] routing weight of each row; token_of_row [S] token index of each row.
        xs = x.index_select(0, token_of_row)  # [S, H]
        inter = down.shape[-1]
        # gate and up projections in separate contiguous buffers: elementwise ops on strided halves are slow on CPU
        g = x.new_empty(xs.shape[0], inter)
        u = x.new_empty(xs.shape[0], inter)
        for e, sl in _slices(counts):
            torch.mm(xs[sl], gate_up[e, :inter].t(), out=g[sl])
            torch.mm(xs[sl], gate_up[e, inter:].t(), out=u[sl])
        silu_g = F.silu(g)
        act = silu_g * u  # [S, I]
        act_w = act * weights_sorted.unsqueeze(-1)
        y = x.new_empty(xs.shape[0], x.shape[1])
        for e, sl in _slices(counts):
            torch.mm(act_w[sl], down[e].t(), out=y[sl])
        out = torch.zeros_like(x)
        out.index_add_(0, token_of_row, y)
        ctx.counts = counts
        ctx.n_tokens = x.shape[0]
        ctx.save_for_backward(xs, gate_up, down, g, u, silu_g, act, act_w, weights_sorted, token_of_row)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        xs, gate_up, down, g, u, silu_g, act, act_w, weights_sorted, token_of_row = ctx.saved_tensors
        counts = ctx.counts
        inter = down.shape[-1]
        need_x, need_gu, need_down, need_w = (ctx.needs_input_grad[i] for i in (0, 1, 2, 4))
        go = grad_out.index_select(0, token_of_row)  # [S, H]
        grad_down = torch.zeros_like(down) if need_down else None
        grad_gate_up = torch.zeros_like(gate_up) if need_gu else None
        g_act_w = torch.empty_like(act)  # d loss / d (act · w)
        for e, sl in _slices(counts):
            torch.mm(go[sl], down[e], out=g_act_w[sl])
            if need_down:
                torch.mm(go[sl].t(), act_w[sl], out=grad_down[e])
        grad_w = (g_act_w * act).sum(-1) if need_w else None
        g_act = g_act_w.mul_(weights_sorted.unsqueeze(-1))
        dg = torch.ops.aten.silu_backward(g_act * u, g)
        du = g_act.mul_(silu_g)
        gxs = torch.empty_like(xs) if need_x else None
        for e, sl in _slices(counts):
            if need_x:
                torch.mm(dg[sl], gate_up[e, :inter], out=gxs[sl])
                gxs[sl].addmm_(du[sl], gate_up[e, inter:])
            if need_gu:
                torch.mm(dg[sl].t(), xs[sl], out=grad_gate_up[e, :inter])
                torch.mm(du[sl].t(), xs[sl], out=grad_gate_up[e, inter:])
        grad_x = None
        if need_x:
            grad_x = torch.zeros(ctx.n_tokens, xs.shape[1], dtype=xs.dtype, device=xs.device)
            grad_x.index_add_(0, token_of_row, gxs)
        return grad_x, grad_gate_up, grad_down, None, grad_w, None


def _slices(counts: list[int]):
    """(expert, row slice) for every expert with at least one row, in sorted-row order."""
    start = 0
    for e, n in enumerate(counts):
        if n:
            yield e, slice(start, start + n)
        start += n


def _check_swiglu(experts) -> None:
    if not getattr(experts, "has_gate", True) or getattr(experts, "has_bias", False) or getattr(experts, "is_transposed", False):
        raise ValueError("sorted_mm supports gated, untransposed experts without bias only")
    if type(experts.act_fn).__name__ not in ("SiLU", "SiLUActivation"):
        raise ValueError(f"sorted_mm implements SwiGLU only, got activation {type(experts.act_fn).__name__}")


def sorted_mm_experts_forward(self, hidden_states, top_k_index, top_k_weights):
    """Drop-in for ``DeepseekV2Experts.forward`` / ``Qwen2MoeExperts.forward`` (gated, concatenated, no bias).

    Under autocast it defers to transformers' ``grouped_mm`` (the hand-written kernels run in one dtype).
    """
    _check_swiglu(self)
    if torch.is_autocast_enabled(hidden_states.device.type):
        return grouped_mm_experts_forward(self, hidden_states, top_k_index, top_k_weights)
    dtype = hidden_states.dtype
    x = hidden_states.to(self.gate_up_proj.dtype)
    k = top_k_index.shape[-1]
    flat = top_k_index.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=self.num_experts).tolist()
    token_of_row = order // k
    weights_sorted = top_k_weights.reshape(-1).index_select(0, order).to(x.dtype)
    out = _SortedExperts.apply(x, self.gate_up_proj, self.down_proj, counts, weights_sorted, token_of_row)
    return out.to(dtype)


def auto_experts_forward(self, hidden_states, top_k_index, top_k_weights):
    """The fastest measured path per device (benchmarks/moe_layer.py): ``sorted_mm`` on CPU, ``grouped_mm``
    (native grouped GEMM kernels) elsewhere."""
    if hidden_states.device.type == "cpu":
        return sorted_mm_experts_forward(self, hidden_states, top_k_index, top_k_weights)
    return grouped_mm_experts_forward(self, hidden_states, top_k_index, top_k_weights)


_IMPLEMENTATIONS = {NAME: sorted_mm_experts_forward, "auto": auto_experts_forward}


def ensure_registered(name: str) -> None:
    """Register ``sorted_mm`` / ``auto`` with transformers' experts interface when asked for (idempotent)."""
    if name in _IMPLEMENTATIONS and name not in ALL_EXPERTS_FUNCTIONS:
        ALL_EXPERTS_FUNCTIONS.register(name, _IMPLEMENTATIONS[name])


def reference_loop_forward(gate_up: torch.Tensor, down: torch.Tensor, x: torch.Tensor, idx: torch.Tensor,
                           weights: torch.Tensor) -> torch.Tensor:
    """The reference's training path (DeepSeek ``moe_infer``-style per-expert Python loop), for benchmarks/tests."""
    out = torch.zeros_like(x)
    inter = down.shape[-1]
    for e in range(gate_up.shape[0]):
        tok, slot = torch.where(idx == e)
        if tok.numel() == 0:
            continue
        h = x[tok] @ gate_up[e].t()
        h = F.silu(h[:, :inter]) * h[:, inter:]
        out = out.index_add(0, tok, (h @ down[e].t()) * weights[tok, slot, None])
    return out
