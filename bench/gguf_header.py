"""What reading a GGUF header costs: our reader against gguf's GGUFReader, in one run.

    .venv/bin/python bench/gguf_header.py [--runs 5]

Two files: (a) the real model SmolLM2-135M-Instruct Q4_1 (98 MB, a 49k-token vocabulary and 49k
merges), (b) a GGUF with Qwen 2.5's vocabulary size (152k tokens, 151k merges, 339 tensor infos),
generated once with GGUFWriter into ~/.cache/llamacontroller/bench/. Each is read the way the
adapter reads it: our reader (``llamacontroller.gguf_header``: arrays of more than 64 items
skipped unread), and the yardstick, ``gguf.GGUFReader`` with the key-values built as the adapter
built them before (every field parsed, long arrays then dropped); both must give the same
key-values, or the bench stops.

Every read runs in a fresh interpreter, so that its memory is honest: the child imports its reader,
reads once and reports its wall and CPU time, its RSS before the read and the peak RSS during it
(Linux: the child resets its peak through ``/proc/self/clear_refs``, then reads ``VmHWM``; not
``getrusage``, whose max RSS survives ``exec`` and so starts at the parent's size). One more child
per case reads under tracemalloc for the peak of Python allocations (not timed: tracing slows
allocations). Runs of the two readers alternate, so that the host's slower phases hit both alike;
times are medians. Goal (issue 17): milliseconds and a few MiB, whatever the vocabulary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

from report import print_table  # bench/report.py: a script's own folder comes first on sys.path

from llamacontroller.local.real_model import real_model_path

REPO = Path(__file__).resolve().parent.parent
PATH = os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")])
CACHE = Path.home() / ".cache" / "llamacontroller" / "bench"
GENERATED = CACHE / "qwen25-vocab-152k-v1.gguf"  # the name changes when the generator does
QWEN_TOKENS = 151_936  # Qwen 2.5's vocabulary (tokenizer.ggml.tokens) and merges
QWEN_MERGES = 151_387

# One read in a fresh interpreter: argv = reader, path, "trace" or "time". It prints a JSON line.
CHILD = r"""
import hashlib, json, sys, time
def status(name):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(name + ":"))
reader, path, trace = sys.argv[1], sys.argv[2], sys.argv[3] == "trace"
started = time.perf_counter()
if reader == "ours":
    from llamacontroller.gguf_header import read_header
    def read():
        return read_header(path).kv
else:
    import gguf
    def value(f):
        if f.types and f.types[0] == gguf.GGUFValueType.ARRAY and len(f.data) > 64:
            return None
        return f.contents()
    def read():
        fields = gguf.GGUFReader(path, "r").fields
        return {name: value(f) for name, f in fields.items() if not name.startswith("GGUF.")}
imported = time.perf_counter() - started
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # the peak RSS (VmHWM) starts again from the current RSS
before = status("VmRSS")
if trace:
    import tracemalloc
    tracemalloc.start()
cpu, wall = time.process_time(), time.perf_counter()
kv = read()
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
peak = tracemalloc.get_traced_memory()[1] if trace else None
hwm = status("VmHWM")
digest = hashlib.sha256(repr(sorted(kv.items())).encode()).hexdigest()
print(json.dumps({"import": imported, "wall": wall, "cpu": cpu, "peak": peak,
                  "rss_before": before, "max_rss": hwm, "digest": digest, "keys": len(kv)}))
"""

READERS = ("ours", "GGUFReader")


def generated_file() -> Path:
    """A GGUF header as big as a Qwen 2.5 model's: byte-level BPE tokens and merges of realistic
    lengths (seeded), their token types, the usual key-values, a chat template, and the tensor
    infos of a 28-layer model (with tiny data: only the header matters here)."""
    if GENERATED.exists():
        return GENERATED
    import gguf
    import numpy as np

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.,;:(){}[]"

    def piece() -> str:
        word = "".join(rng.choice(letters) for _ in range(rng.randint(1, 9)))
        return ("Ġ" + word) if rng.random() < 0.5 else word

    tokens = [f"<|tok{i}|>" if i >= QWEN_TOKENS - 300 else piece() for i in range(QWEN_TOKENS)]
    merges = [f"{piece()} {piece()}" for _ in range(QWEN_MERGES)]
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = GENERATED.with_suffix(".partial")
    writer = gguf.GGUFWriter(partial, "qwen2")
    writer.add_name("Qwen2.5 7B Instruct (vocabulary only)")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_context_length(32768)
    writer.add_embedding_length(3584)
    writer.add_block_count(28)
    writer.add_head_count(28)
    writer.add_head_count_kv(4)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * (QWEN_TOKENS - 300) + [gguf.TokenType.CONTROL] * 300)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(QWEN_TOKENS - 1)
    writer.add_chat_template(
        "{% for message in messages %}" + "{{ message['content'] }}" * 80 + "{% endfor %}"
    )
    names = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_gate", "ffn_down"]
    tiny = np.zeros(4, dtype=np.float32)
    writer.add_tensor("token_embd.weight", tiny)
    for layer in range(28):
        for name in names:
            writer.add_tensor(f"blk.{layer}.{name}.weight", tiny)
            if name in ("attn_q", "attn_k", "attn_v"):
                writer.add_tensor(f"blk.{layer}.{name}.bias", tiny)
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", tiny)
        writer.add_tensor(f"blk.{layer}.ffn_norm.weight", tiny)
    writer.add_tensor("output_norm.weight", tiny)
    writer.add_tensor("output.weight", tiny)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(GENERATED)
    return GENERATED


def child(reader: str, path: Path, trace: bool = False) -> dict:
    """One read in a fresh interpreter."""
    command = [sys.executable, "-c", CHILD, reader, str(path), "trace" if trace else "time"]
    done = subprocess.run(command, stdout=subprocess.PIPE, check=True, env=os.environ | {"PYTHONPATH": PATH})
    return json.loads(done.stdout)


def mib(size: float) -> str:
    return f"{size / 2**20:.1f}"


def measure(name: str, path: Path, runs: int) -> list[tuple[str, ...]]:
    for reader in READERS:
        child(reader, path)  # warm-up: the header in the page cache, the interpreter's files too
    samples: dict[str, list[dict]] = {reader: [] for reader in READERS}
    for run in range(runs):
        for reader in READERS if run % 2 == 0 else reversed(READERS):
            samples[reader].append(child(reader, path))
    traced = {reader: child(reader, path, trace=True) for reader in READERS}
    digests = {sample["digest"] for reader in READERS for sample in samples[reader]}
    if len(digests) != 1:
        raise SystemExit(f"the readers disagree on the key-values of {path}")
    rows = []
    summary = {}
    for reader in READERS:
        runs_of = samples[reader]
        wall = statistics.median(s["wall"] for s in runs_of) * 1e3
        cpu = statistics.median(s["cpu"] for s in runs_of) * 1e3
        before = statistics.median(s["rss_before"] for s in runs_of)  # interpreter and reader imported
        added = statistics.median(s["max_rss"] - s["rss_before"] for s in runs_of)  # peak during the read
        imported = statistics.median(s["import"] for s in runs_of) * 1e3
        peak = traced[reader]["peak"]
        summary[reader] = (wall, peak, added)
        rows.append(
            (name, reader, f"{wall:.1f}", f"{cpu:.1f}", mib(peak), mib(added), mib(before), f"{imported:.0f}")
        )
    (ours_ms, ours_peak, ours_rss), (their_ms, their_peak, their_rss) = summary["ours"], summary["GGUFReader"]
    rows.append(
        (
            name,
            "GGUFReader / ours",
            f"{their_ms / ours_ms:.0f}x",
            "",
            f"{their_peak / ours_peak:.0f}x",
            f"{their_rss / ours_rss:.0f}x" if ours_rss > 0 else "",
            "",
            "",
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed reads per reader and file")
    args = parser.parse_args()
    files = [
        ("SmolLM2-135M Q4_1 (49k vocab)", real_model_path(progress=print)),
        ("Qwen 2.5 vocab (152k + 151k merges)", generated_file()),
    ]
    rows = []
    for name, path in files:
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
        rows += measure(name, path, args.runs)
    print_table(
        f"one header read per fresh interpreter, median of {args.runs} (peak: one traced read)",
        ("file", "reader", "ms", "CPU ms", "traced peak MiB", "RSS added MiB", "RSS before MiB", "import ms"),
        rows,
        names=2,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
