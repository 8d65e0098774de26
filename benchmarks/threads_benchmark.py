"""One job on two threads, or two jobs on one thread each? (``runtime.threads`` on a 2-core CPU)

    python benchmarks/threads_benchmark.py              # embedded SmolLM2, 8 x 128 tokens
    python benchmarks/threads_benchmark.py --passes 8 --cores 2

The default run's rules are forward passes of the model plus vocabulary-sized work; on a
small CPU they do not use two threads fully (small matrices, Python between operations,
single-threaded reductions). This times the same work, ``2 * passes`` forward passes
(logits + log-softmax) of the prepared model on a batch of corpus-sized sequences, done
(a) by one process with ``cores`` torch threads and (b) by ``cores`` processes at once
with one thread each (what ``snakemake --cores 2`` does with ``runtime.threads: 1``), and
prints the throughput ratio (b)/(a). Each process loads the model before its clock starts.

Needs the prepared embedded model (``results/models/smollm2/manifest.json``; the workflow's
``prepare_model`` rule makes it).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "results/models/smollm2/manifest.json"

WORKER = r"""
import json, sys, time, torch
threads, passes, batch, seq_len, manifest = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
from stages_of_inference.core.models import load_hf_model
model = load_hf_model(manifest, device="cpu", dtype="float32", attn_implementation="sdpa")
ids = torch.randint(0, model.config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    model(ids)  # warm-up
    start = time.perf_counter()
    for _ in range(passes):
        torch.log_softmax(model(ids).logits, -1)
    print(json.dumps({"threads": threads, "passes": passes, "seconds": time.perf_counter() - start}))
"""


def workers(n: int, threads: int, passes: int, args) -> list[dict]:
    cmd = [sys.executable, "-c", WORKER, str(threads), str(passes), str(args.batch), str(args.seq_len), str(MANIFEST)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(n)]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"worker failed ({p.returncode}); is {MANIFEST} there? (snakemake prepare_model)")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--passes", type=int, default=6, help="forward passes per core")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    args = ap.parse_args()
    total = args.cores * args.passes
    one = workers(1, args.cores, total, args)[0]["seconds"]
    many = max(r["seconds"] for r in workers(args.cores, 1, args.passes, args))
    print(f"{total} forward passes of {args.batch} x {args.seq_len} tokens (SmolLM2, float32, sdpa)")
    print(f"  one process, {args.cores} threads:         {one:7.1f} s")
    print(f"  {args.cores} processes at once, 1 thread each: {many:7.1f} s")
    print(f"  throughput ratio (processes / threads): {one / many:.2f}")


if __name__ == "__main__":
    main()
