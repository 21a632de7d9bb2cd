"""An estimate for people (a table) and for programs (JSON bytes). Pure."""

from __future__ import annotations

from typing import Any

from llamacontroller.fit.estimate import MiB, Need, SlotEstimate

GiB = 1 << 30


def size(value: int) -> str:
    """1.21 GiB, 512.0 MiB: GiB from one GiB up."""
    return f"{value / GiB:.2f} GiB" if value >= GiB else f"{value / MiB:.1f} MiB"


def _need(need: Need) -> dict[str, int]:
    return {
        "weights": need.weights,
        "kvCache": need.kv_cache,
        "compute": need.compute,
        "overhead": need.overhead,
        "total": need.total,
    }


def as_json(who: str, model: str, slot: SlotEstimate) -> dict[str, Any]:
    estimate = slot.estimate
    return {
        "llamaModel": who,
        "node": slot.placement.node,
        "slot": slot.placement.slot,
        "model": model,
        "ctxSize": estimate.n_ctx,
        "ctxPerSequence": estimate.n_ctx_seq,
        "parallel": estimate.n_seq,
        "kvUnified": estimate.kv_unified,
        "flashAttn": estimate.flash_attn,
        "ubatch": estimate.ubatch,
        "layersOnGpus": estimate.layers_on_gpus,
        "gpus": [
            {"gpu": gpu} | _need(need) for gpu, need in zip(slot.gpu_indices, estimate.gpus, strict=True)
        ],
        "total": sum(need.total for need in estimate.gpus),
        "host": _need(estimate.host) | {"output": estimate.host.output, "total": estimate.host.total},
        "notes": list(estimate.notes),
    }


COLUMNS = ("DEVICE", "WEIGHTS", "KV CACHE", "COMPUTE", "OVERHEAD", "TOTAL")


def as_table(who: str, model: str, slot: SlotEstimate, n_layer: int) -> str:
    estimate = slot.estimate
    kv = "a unified KV cache" if estimate.kv_unified else f"{estimate.n_ctx_seq} cells each"
    lines = [
        f"{who}: slot {slot.placement.slot} on {slot.placement.node}, model {model}",
        f"ctx {estimate.n_ctx} for {estimate.n_seq} sequence{'s' if estimate.n_seq > 1 else ''} "
        f"({kv}), {estimate.layers_on_gpus}/{n_layer + 1} layers on GPUs (the output layer counts), "
        f"flash attention {'on' if estimate.flash_attn else 'off'}, ubatch {estimate.ubatch}",
    ]
    rows: list[tuple[str, ...]] = [COLUMNS]
    for gpu, need in zip(slot.gpu_indices, estimate.gpus, strict=True):
        figures = (need.weights, need.kv_cache, need.compute, need.overhead, need.total)
        rows.append((f"GPU {gpu}", *(size(v) for v in figures)))
    if estimate.gpus:
        rows.append(("GPUs", "", "", "", "", size(sum(need.total for need in estimate.gpus))))
    host = estimate.host
    rows.append(("host", size(host.weights), size(host.kv_cache), size(host.compute), "", size(host.total)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.append(f"the host's total holds its output buffer too ({size(host.output)})")
    lines += [f"note: {note}" for note in estimate.notes]
    return "\n".join(lines)
