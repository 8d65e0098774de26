"""Per-job start-up cost and the end-to-end ``snakemake`` sweep against the engine in-process.

    python benchmarks/startup_benchmark.py                       # CPU, embedded SmolLM2
    python benchmarks/startup_benchmark.py --layers-per-job 5 --n-seq 4 --seq-len 64

1. Fresh Python processes, each timed from inside: ``import torch``; ``import
   transformers``; ``import transformer_lens.model_bridge``; an intervention job's start-up
   (imports + loading the prepared model) with ``runtime.attn_implementation: sdpa`` (a
   plain ``transformers`` model, no TransformerLens) and with ``bridge`` (a
   ``TransformerBridge``, as every job did before).
2. ``snakemake`` runs the intervention jobs and the aggregation of one model in a scratch
   working directory (``--cores 2``, the jobs' own ``benchmark:`` files and logs give each
   job's wall time, model-load time and sweep time), once per attention implementation.
3. The same sweep in one process: one model load, ``run_sweep`` over every intervention.

Needs the prepared embedded model (``results/models/smollm2/manifest.json``; the workflow's
``prepare_model`` rule makes it).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
MANIFEST = ROOT / "results/models/smollm2/manifest.json"

PROBES = {
    "import torch": "import torch",
    "import transformers": "import torch, transformers",
    "import transformer_lens": "import torch, transformers, transformer_lens.model_bridge",
    "job start-up, sdpa (plain transformers)": (
        "import torch; torch.set_num_threads({threads}); "
        "from stages_of_inference.robustness.rules import interventions_chunk; "
        "from stages_of_inference.core.models import load_hf_model; "
        "m = load_hf_model({manifest!r}, device='cpu', attn_implementation='sdpa')"
    ),
}


def probe(code: str, repeats: int) -> float:
    """Best-of-``repeats`` seconds of ``code`` in a fresh interpreter, timed inside it."""
    wrapped = f"import time; t0 = time.perf_counter()\n{code}\nprint('T=%.4f' % (time.perf_counter() - t0))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    best = float("inf")
    for _ in range(repeats):
        out = subprocess.run([PY, "-c", wrapped], capture_output=True, text=True, env=env, cwd=ROOT)
        match = re.search(r"T=([0-9.]+)", out.stdout)
        if not match:
            raise RuntimeError(out.stderr[-2000:])
        best = min(best, float(match.group(1)))
    return best


def snakemake_run(workdir: Path, config: dict, target: str) -> float:
    cfg = workdir / "bench-config.json"
    cfg.write_text(json.dumps(config))
    # the target first: --configfile takes several values, --quiet an optional one
    cmd = [str(Path(PY).parent / "snakemake"), target, "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(workdir), "--cores", "2", "--resources", "gpu=1", "--quiet", "all", "--configfile", str(cfg)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(out.stdout[-3000:] + out.stderr[-3000:])
    return wall


def job_numbers(workdir: Path) -> dict:
    loads, sweeps, walls = [], [], []
    for log in sorted((workdir / "logs/interventions_chunk").rglob("*.log")):
        text = log.read_text()
        loads += [float(x) for x in re.findall(r"model loaded in ([0-9.]+) s", text)]
        sweeps += [float(x) for x in re.findall(r"sweep of \d+ interventions took ([0-9.]+) s", text)]
    for tsv in sorted((workdir / "results/benchmarks/interventions_chunk").rglob("*.tsv")):
        lines = tsv.read_text().splitlines()
        walls.append(float(lines[1].split("\t")[0]))
    agg = workdir / "results/benchmarks/interventions/smollm2.tsv"
    agg_s = float(agg.read_text().splitlines()[1].split("\t")[0]) if agg.exists() else float("nan")
    return dict(n_jobs=len(walls), job_wall_s=sum(walls), load_s=sum(loads), sweep_s=sum(sweeps), aggregate_s=agg_s)


def in_process(n_seq, seq_len, threads) -> dict:
    """Load once, tokenize the same corpus, run_sweep over every intervention."""
    code = f"""
import time, torch
t0 = time.perf_counter()
torch.set_num_threads({threads})
from stages_of_inference.core.models import load_hf_model
from stages_of_inference.core.corpus import CorpusSettings, sample_sequences
from stages_of_inference.core.engine import layers_for
from stages_of_inference.robustness.compute import run_sweep
from transformers import AutoTokenizer
import json
manifest = {str(MANIFEST)!r}
model = load_hf_model(manifest, device='cpu', attn_implementation='sdpa')
tok = AutoTokenizer.from_pretrained(json.load(open(manifest))['path'])
tokens, record = sample_sequences(CorpusSettings(n_sequences={n_seq}, seq_len={seq_len}), tok)
t1 = time.perf_counter()
n = model.config.num_hidden_layers
jobs = [(k, l) for k in ('drop', 'swap') for l in layers_for(k, n)]
df = run_sweep(model, tokens, jobs, batch_size=8, first=1 if record['has_bos'] else 0, progress=False)
t2 = time.perf_counter()
print('R=' + json.dumps(dict(startup_s=t1 - t0, sweep_s=t2 - t1, rows=len(df))))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    match = re.search(r"R=(\{.*\})", out.stdout)
    if not match:
        raise RuntimeError(out.stderr[-3000:])
    return {**json.loads(match.group(1)), "process_wall_s": wall}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-seq", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--layers-per-job", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--attn", default="sdpa,eager", help="attention implementations for the snakemake runs")
    p.add_argument("--skip-probes", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if not MANIFEST.exists():
        sys.exit(f"{MANIFEST} is missing: run `snakemake --cores 2 {MANIFEST.relative_to(ROOT)}` first.")
    info = {"load_avg_start": os.getloadavg()[0], "args": vars(args)}

    if not args.skip_probes:
        info["probes"] = {}
        for name, code in PROBES.items():
            info["probes"][name] = probe(code.format(threads=args.threads, manifest=str(MANIFEST)), args.repeats)
            print(f"{name}: {info['probes'][name]:.2f} s", flush=True)

    info["snakemake"] = {}
    for attn in filter(None, args.attn.split(",")):
        workdir = Path(tempfile.mkdtemp(prefix=f"sweep-e2e-{attn}-"))
        try:
            (workdir / "results/models/smollm2").mkdir(parents=True)
            shutil.copy(MANIFEST, workdir / "results/models/smollm2/manifest.json")
            config = {
                "models": {"smollm2": {"source": "embedded"}},
                "corpus": {"source": "embedded", "n_sequences": args.n_seq, "seq_len": args.seq_len, "seed": 0},
                "interventions": {"kinds": ["drop", "swap"], "layers_per_job": args.layers_per_job, "batch_size": 8},
                "runtime": {"device": "cpu", "dtype": "float32", "threads": args.threads,
                            "attn_implementation": attn},
            }
            snakemake_run(workdir, config, "results/smollm2/corpus.pt")  # not timed
            wall = snakemake_run(workdir, config, "results/smollm2/interventions.parquet")
            info["snakemake"][attn] = {"wall_s": wall, **job_numbers(workdir)}
            print(f"snakemake ({attn}): {info['snakemake'][attn]}", flush=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    info["in_process"] = in_process(args.n_seq, args.seq_len, args.threads)
    print(f"in-process: {info['in_process']}", flush=True)
    info["load_avg_end"] = os.getloadavg()[0]
    report(info)
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=1))


def report(info):
    a = info["args"]
    print()
    print(f"## start-up and end-to-end (CPU, {a['threads']} threads; SmolLM2, {a['n_seq']} x {a['seq_len']} tokens, "
          f"59 interventions, layers_per_job {a['layers_per_job']})")
    if "probes" in info:
        print()
        print("| fresh process | s |")
        print("| --- | ---: |")
        for name, t in info["probes"].items():
            print(f"| {name} | {t:.2f} |")
    ip = info["in_process"]
    print()
    print("| run | jobs | wall s | model loads s | sweeps s | aggregate s | wall / in-process sweep |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for attn, r in info["snakemake"].items():
        print(f"| snakemake, {attn} | {r['n_jobs']} | {r['wall_s']:.1f} | {r['load_s']:.1f} | {r['sweep_s']:.1f} | "
              f"{r['aggregate_s']:.1f} | {r['wall_s'] / ip['sweep_s']:.2f} |")
    print(f"| one process, sdpa | 1 | {ip['process_wall_s']:.1f} | {ip['startup_s']:.1f} (+ tokenizing) | "
          f"{ip['sweep_s']:.1f} | - | {ip['process_wall_s'] / ip['sweep_s']:.2f} |")
    print(f"load average: {info['load_avg_start']:.1f} at start, {info['load_avg_end']:.1f} at end")


if __name__ == "__main__":
    main()
