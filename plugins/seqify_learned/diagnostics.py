"""What the learned order policy does: per-step profiles of sampled orders, and pictures.

:class:`OrderProfile` accumulates, for each generation step ``t``, which kind of slot
the policy filled, where it sits (mean normalized coordinate), and how much of its
*neighbourhood* was already known (neighbours = slots sharing a coordinate value on
any axis: the row, column and box of a Sudoku cell; the atom of a bond). Pictures use
matplotlib's Agg backend, imported only when drawn, and are written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from seqify.io import atomic_write_bytes
from seqify.types import OrderBatch, TokenBatch, TokenizerSpec

__all__ = ["OrderProfile", "plot_policy_entropy", "plot_order_profile"]


class OrderProfile:
    """Per-step statistics of generation orders, summed over batches.

    Args:
        spec: the tokenizer's spec (kind names, coordinate axes and sizes).
    """

    def __init__(self, spec: TokenizerSpec):
        self.spec = spec
        self.n_kinds = len(spec.kinds)
        self.n_axes = len(spec.coord_sizes)
        self.rows: list[float] = []  # rows that chose a slot at step t
        self.kind_counts: list[list[float]] = []
        self.coord_sums: list[list[float]] = []
        self.nbr_frac_sum: list[float] = []
        self.nbr_rows: list[float] = []
        self.known_frac_sum: list[float] = []
        self.entropy_sum: list[float] = []
        self.entropy_batches: list[float] = []

    def __repr__(self) -> str:
        return f"OrderProfile(steps={len(self.rows)}, kinds={self.n_kinds})"

    def _grow(self, T: int) -> None:
        while len(self.rows) < T:
            self.rows.append(0.0)
            self.kind_counts.append([0.0] * self.n_kinds)
            self.coord_sums.append([0.0] * self.n_axes)
            self.nbr_frac_sum.append(0.0)
            self.nbr_rows.append(0.0)
            self.known_frac_sum.append(0.0)
            self.entropy_sum.append(0.0)
            self.entropy_batches.append(0.0)

    @torch.no_grad()
    def add(self, batch: TokenBatch, order: OrderBatch, entropy_per_step: list[float] | None = None) -> None:
        """Add the orders chosen for ``batch`` (blocks of one; CPU tensors are fine).

        Args:
            batch: the templates (structure and given flags).
            order: the generation orders of ``batch``.
            entropy_per_step: the policy's mean entropy at each step, if recorded.
        """
        batch = batch.to("cpu")
        order = order.to("cpu")
        B, L = batch.values.shape
        rows_B = torch.arange(B)
        real_BL = ~batch.pad
        n_real_B = real_BL.sum(1).float()
        slot_block_BL = order.slot_block()
        T = int(batch.target.sum(1).max()) if B else 0
        self._grow(T)
        sizes_C = torch.tensor([max(s - 1, 1) for s in self.spec.coord_sizes], dtype=torch.float32)
        known_BL = batch.given.clone()
        for t in range(T):
            chosen_BL = slot_block_BL == t
            has_B = chosen_BL.any(1)
            if not bool(has_B.any()):
                continue
            slot_B = chosen_BL.float().argmax(1)
            kind_B = batch.kinds[rows_B, slot_B]
            counts = torch.bincount(kind_B[has_B], minlength=self.n_kinds).tolist()
            self.rows[t] += float(has_B.sum())
            self.kind_counts[t] = [a + b for a, b in zip(self.kind_counts[t], counts[: self.n_kinds])]
            coords_BC = batch.coords[rows_B, slot_B]
            if self.n_axes:
                sums = (coords_BC[has_B].float() / sizes_C).sum(0).tolist()
                self.coord_sums[t] = [a + b for a, b in zip(self.coord_sums[t], sums)]
                nbr_BL = (batch.coords == coords_BC[:, None, :]).any(-1) & real_BL & ~chosen_BL
                n_nbr_B = nbr_BL.sum(1)
                ok_B = has_B & (n_nbr_B > 0)
                frac_B = (nbr_BL & known_BL).sum(1).float() / n_nbr_B.clamp_min(1).float()
                self.nbr_frac_sum[t] += float(frac_B[ok_B].sum())
                self.nbr_rows[t] += float(ok_B.sum())
            others_B = (n_real_B - 1).clamp_min(1)
            self.known_frac_sum[t] += float(((known_BL & real_BL).sum(1).float() / others_B)[has_B].sum())
            known_BL = known_BL | chosen_BL
        for t, h in enumerate((entropy_per_step or [])[:T]):
            self.entropy_sum[t] += float(h)
            self.entropy_batches[t] += 1.0

    def summary(self) -> dict[str, Any]:
        """Per-step means (rounded lists) behind the order-profile picture."""

        def mean(total: list[float], count: list[float]) -> list[float | None]:
            return [round(s / c, 4) if c else None for s, c in zip(total, count)]

        names = [k.name for k in self.spec.kinds]
        kind_share = {
            name: mean([row[k] for row in self.kind_counts], self.rows) for k, name in enumerate(names)
        }
        coord = {
            axis: mean([row[a] for row in self.coord_sums], self.rows) for a, axis in enumerate(self.spec.coord_names)
        }
        first = {name: share[0] for name, share in kind_share.items()} if self.rows else {}
        return {
            "steps": len(self.rows),
            "kinds": names,
            "kind_share_per_step": kind_share,
            "first_step_kind_share": first,
            "mean_coord_per_step": coord,
            "known_neighbour_fraction_per_step": mean(self.nbr_frac_sum, self.nbr_rows),
            "known_fraction_per_step": mean(self.known_frac_sum, self.rows),
            "generation_policy_entropy_per_step": mean(self.entropy_sum, self.entropy_batches),
        }


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(train_log: dict[str, Any] | None, name: str) -> tuple[list[float], list[float]]:
    points = ((train_log or {}).get("series") or {}).get(name) or []
    return [float(p[0]) for p in points], [float(p[1]) for p in points]


def plot_policy_entropy(train_log: dict[str, Any] | None, path: Path, *, warm_start: float) -> Path:
    """Training curves of the policy entropies and the order-logit spread, warm start shaded.

    Five panels: the per-step entropies of p and q (nats); how far each is below a
    uniform choice among the open slots (0 = uniform, growing as the policy commits);
    the order NLL per item under q's orders against a uniform order's (log n!) and
    the order cost E_q[log q - log p]; the value NLL per item along q's orders against
    uniform orders, same model and pass; the spread of p's order logits (collapse: ~0
    for ever; explosion: up to the clip). The per-item curves are one-step estimates
    (n times one uniformly drawn step), so they are noisy.

    Args:
        train_log: the training log (its ``series`` hold ``policy_entropy``,
            ``q_entropy``, ``*_entropy_deficit``, ``order_nll``, ``uniform_order_nll``,
            ``order_cost``, ``value_nll``, ``uniform_value_nll``, ``order_logit_std``
            and ``phase``).
        path: where the PNG goes.
        warm_start: fraction of training in the warm start (used when no ``phase`` series).
    """
    plt = _pyplot()
    fig, (ax_h, ax_d, ax_o, ax_v, ax_s) = plt.subplots(5, 1, figsize=(7, 12), sharex=True)
    steps_ph, phase = _series(train_log, "phase")
    if steps_ph and any(v == 0 for v in phase):
        warm_end = max(s for s, v in zip(steps_ph, phase) if v == 0)
    else:
        warm_end = warm_start * float((train_log or {}).get("steps") or 0)
    panels = (
        (ax_h, (("policy_entropy", "order policy p"), ("q_entropy", "posterior q")), "entropy per step (nats)"),
        (ax_d, (("policy_entropy_deficit", "p"), ("q_entropy_deficit", "q")), "below uniform (nats)"),
        (ax_o, (("order_nll", "order NLL, q's orders"), ("uniform_order_nll", "uniform order (log n!)"),
                ("order_cost", "order cost E_q[log q - log p]")), "nats per item"),
        (ax_v, (("value_nll", "value NLL, q's orders"), ("uniform_value_nll", "value NLL, uniform orders")),
         "nats per item"),
        (ax_s, (("order_logit_std", "std of p's order logits"),), "order-logit std"),
    )
    drawn = 0
    for ax, curves, label in panels:
        if warm_end > 0:
            ax.axvspan(0, warm_end, color="0.9", label="warm start (random orders)")
        for name, legend in curves:
            steps, values = _series(train_log, name)
            if steps:
                ax.plot(steps, values, label=legend)
                drawn += 1
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if not drawn:
        ax_h.text(0.5, 0.5, "no training series (model reused?)", ha="center", va="center", transform=ax_h.transAxes)
    ax_h.set_title("learned order: the policies during training")
    ax_s.set_xlabel("training step")
    return _save(fig, path)


def plot_order_profile(summary: dict[str, Any], path: Path) -> Path:
    """What the policy fills first: per generation step, kind shares (or mean coordinate
    for one kind), known-neighbour fraction, and the policy's entropy."""
    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    steps = list(range(summary["steps"]))

    def clean(values):
        return [float("nan") if v is None else v for v in values]

    ax = axes[0]
    if len(summary["kinds"]) > 1:
        shares = [clean(summary["kind_share_per_step"][k]) for k in summary["kinds"]]
        ax.stackplot(steps, *shares, labels=summary["kinds"], alpha=0.85)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of chosen slots")
        ax.set_title("which kind of slot the policy fills at each step")
    else:
        for axis, values in summary["mean_coord_per_step"].items():
            ax.plot(steps, clean(values), label=axis)
        ax.set_ylim(0, 1)
        ax.set_ylabel("mean coordinate (0-1)")
        ax.set_title("where the policy fills at each step")
    ax.legend(fontsize=8, loc="upper right")
    ax = axes[1]
    ax.plot(steps, clean(summary["known_neighbour_fraction_per_step"]), label="chosen slot's known neighbours")
    ax.plot(steps, clean(summary["known_fraction_per_step"]), "--", color="0.4", label="all slots known (random-pick reference)")
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction known")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(steps, clean(summary["generation_policy_entropy_per_step"]), color="tab:purple")
    ax.set_ylabel("policy entropy (nats)")
    ax.set_xlabel("generation step")
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(fig, path)
