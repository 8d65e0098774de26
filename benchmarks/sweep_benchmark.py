"""Drop/swap sweep benchmark: three loop structures on the same model and tokens, one run.

    python benchmarks/sweep_benchmark.py --model smollm2 --device cpu           # this CPU
    python benchmarks/sweep_benchmark.py --model gpt2-xl-shape --device cuda    # a GPU
    python benchmarks/sweep_benchmark.py --model tiny-gpt2 --quick              # smoke test

What is timed, each on the same model object and the same token matrix:

(a) authors  The loop structure of the authors' ``model_intervention.py``: one sequence
             at a time; the unmodified model's forward pass recomputed for every
             intervention; for every swap the model is rebuilt (a deep copy of the
             ``transformers`` model with the two layers exchanged); a drop runs the block
             and replaces its output by its input (= zero-ablating its attention and MLP
             outputs, as their hooks do); both logits moved to the CPU and the metrics
             computed there; per-token Python lists, with every token and both argmax
             predictions decoded to strings. Too slow to run in full: ``--authors-layers``
             layers per kind (spread over depth) are timed over ``--authors-seqs``
             sequences and extrapolated, per kind: n_kind x (mean rebuild time +
             mean time per sequence x n_seq). Its forward passes use the same fast plain
             model as (b) (SDPA attention, no TransformerLens hooks): the ratio measures
             the loop structure, not the hooks.
(b) batched  A plain batched sweep: the batch's baseline once, then for every intervention
             a full forward pass with the layer list edited (no copy), metrics on the
             device, one host copy per intervention.
(c) engine   ``stages_of_inference.robustness.compute.run_sweep``: prefix-cached suffix replay, SDPA,
             metrics on the device, one host copy per batch, tidy DataFrame at the end.
N x fwd      One plain batched forward pass (logits only) over the same tokens, times N
             layers: what (c) can at best approach (its 2N-1 suffixes cost about N
             forward passes of blocks, plus 2N unembeddings instead of N).

Variants of (c) printed after the table: TF32 matmuls, bfloat16 (with the change of
the per-token metrics against float32), ``compile=True``, and a forced CUDA out-of-memory fallback (``--oom-test``).
Random-weight models are built from a config alone (timing does not depend on weights).
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from stages_of_inference.core.engine import Engine as Sweep  # noqa: E402
from stages_of_inference.core.engine import _decoder_layers, block_order, layers_for
from stages_of_inference.core.metrics import Reference, compare, metrics_kernel  # noqa: E402
from stages_of_inference.robustness.compute import _targets, run_sweep  # noqa: E402

SHAPES = {
    # name: (model_type, config overrides)
    "gpt2-xl-shape": ("gpt2", dict(n_layer=48, n_embd=1600, n_head=25, vocab_size=50257, n_positions=1024)),
    "pythia-1.4b-shape": ("gpt_neox", dict(num_hidden_layers=24, hidden_size=2048, num_attention_heads=16,
                                           intermediate_size=8192, vocab_size=50304, rotary_pct=0.25,
                                           max_position_embeddings=2048, use_parallel_residual=True)),
    "tiny-gpt2": ("gpt2", dict(n_layer=4, n_embd=64, n_head=4, vocab_size=50257, n_positions=1024)),
    "tiny-neox": ("gpt_neox", dict(num_hidden_layers=4, hidden_size=64, num_attention_heads=4,
                                   intermediate_size=256, vocab_size=50304, max_position_embeddings=2048)),
    "tiny-llama": ("llama", dict(num_hidden_layers=4, hidden_size=64, num_attention_heads=4,
                                 num_key_value_heads=2, intermediate_size=128, vocab_size=49152)),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device):
    sync(device)
    return time.perf_counter()


# --------------------------------------------------------------------------------------
# model and tokens


def find_tokenizer_dir():
    for path in (ROOT / "results/models/smollm2/weights", ROOT / ".carry/tokenizer"):
        if (path / "tokenizer.json").exists():
            return path
    return None


def load_tokenizer():
    from transformers import AutoTokenizer

    path = find_tokenizer_dir()
    if path is not None:
        return AutoTokenizer.from_pretrained(str(path))
    from stages_of_inference.core.models import load_embedded_tokenizer

    return load_embedded_tokenizer()


def build_model(name, device, dtype=torch.float32):
    from transformers import AutoConfig, AutoModelForCausalLM

    if name == "smollm2":
        manifest = ROOT / "results/models/smollm2/manifest.json"
        if manifest.exists():
            from stages_of_inference.core.models import load_hf_model

            model = load_hf_model(str(manifest), device=str(device), attn_implementation="sdpa")
            return model, f"SmolLM2-135M-Instruct (prepared weights, {manifest.parent})"
        from stages_of_inference.core.models import load_embedded_hf_model

        model = load_embedded_hf_model()
        model.config._attn_implementation = "sdpa"
        return model.to(device).eval(), "SmolLM2-135M-Instruct (dequantized from the embedded GGUF)"
    arch, overrides = SHAPES[name]
    config = AutoConfig.for_model(arch, **overrides)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval(), f"random weights, {arch} {overrides}"


def make_tokens(tokenizer, n_seq, seq_len, vocab):
    from stages_of_inference.core.corpus import CorpusSettings, sample_sequences

    tokens, record = sample_sequences(CorpusSettings(n_sequences=n_seq, seq_len=seq_len, seed=0), tokenizer)
    return tokens % vocab, (1 if record["has_bos"] else 0)


# --------------------------------------------------------------------------------------
# (a) the authors' loop structure


def authors_loop(model, tokens, jobs, tokenizer, first, n_seqs):
    """Returns (per-kind timing samples, per-token Python lists)."""
    device = next(model.parameters()).device
    rows = defaultdict(list)
    samples = {kind: {"rebuild": [], "per_seq": [], "rebuild_cpu": [], "per_seq_cpu": []} for kind in ("drop", "swap")}
    n_vocab = len(tokenizer)

    def decode(ids):
        return [tokenizer.decode([i % n_vocab]) for i in ids]

    def entropy2(logits):  # their formula: softmax, clamp, log base 2
        probs = torch.clamp(torch.softmax(logits, dim=-1), min=1e-9)
        return -(probs * (torch.log(probs) / torch.log(torch.tensor(2.0)))).sum(-1)

    def passthrough(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    for kind, layer in jobs:
        t0, c0 = now(device), time.process_time()
        net = model
        if kind == "swap":  # the model is rebuilt for every swap
            net = copy.deepcopy(model)
            layers = _decoder_layers(net)
            order = list(range(layer)) + block_order("swap", layer, len(layers))
            reordered = torch.nn.ModuleList([layers[i] for i in order])
            base = getattr(net, net.base_model_prefix)
            for attr in ("layers", "h"):
                if getattr(base, attr, None) is layers:
                    setattr(base, attr, reordered)
        t1, c1 = now(device), time.process_time()
        samples[kind]["rebuild"].append(t1 - t0)
        samples[kind]["rebuild_cpu"].append(c1 - c0)
        for i in range(n_seqs):
            ids = tokens[i : i + 1].to(device)
            with torch.inference_mode():
                logits_normal = model(input_ids=ids, use_cache=False).logits  # recomputed every time
                handle = None
                if kind == "drop":  # the block runs, its output is replaced by its input
                    handle = _decoder_layers(model)[layer].register_forward_hook(passthrough, with_kwargs=True)
                try:
                    logits_int = net(input_ids=ids, use_cache=False).logits
                finally:
                    if handle is not None:
                        handle.remove()
            ln = logits_normal[0, first:].float().cpu()
            li = logits_int[0, first:].float().cpu()
            target = ids[0, first + 1 :].cpu()
            lp_n, lp_i = ln.log_softmax(-1), li.log_softmax(-1)
            loss_n = -lp_n[:-1].gather(-1, target[:, None])[:, 0]
            loss_i = -lp_i[:-1].gather(-1, target[:, None])[:, 0]
            kl = (lp_n.exp() * (lp_n - lp_i)).sum(-1)
            rows["kl"].extend(kl.tolist())
            rows["loss_normal"].extend(loss_n.tolist())
            rows["loss_intervened"].extend(loss_i.tolist())
            rows["loss_diff"].extend((loss_n - loss_i).tolist())
            rows["entropy_normal"].extend(entropy2(ln).tolist())
            rows["entropy_intervened"].extend(entropy2(li).tolist())
            rows["layer"].extend([layer] * len(kl))
            rows["token"].extend(decode(ids[0, first:].tolist()))
            rows["token_normal"].extend(decode(ln.argmax(-1).tolist()))
            rows["token_intervened"].extend(decode(li.argmax(-1).tolist()))
        t2, c2 = now(device), time.process_time()
        samples[kind]["per_seq"].append((t2 - t1) / n_seqs)
        samples[kind]["per_seq_cpu"].append((c2 - c1) / n_seqs)
        del net
        gc.collect()
    return samples, rows


# --------------------------------------------------------------------------------------
# (b) a plain batched sweep: full forward per intervention, layer list edited


def batched_sweep(model, tokens, jobs, batch_size, first):
    device = next(model.parameters()).device
    layers = _decoder_layers(model)
    base = getattr(model, model.base_model_prefix)
    attr = next(a for a in ("layers", "h") if getattr(base, a, None) is layers)
    config = model.config
    n_layers_key = next(k for k in ("num_hidden_layers", "n_layer") if hasattr(config, k))
    n = len(layers)
    out = {job: [] for job in jobs}
    try:
        for start in range(0, len(tokens), batch_size):
            ids = tokens[start : start + batch_size].to(device)
            targets, has_target = _targets(ids, first)
            with torch.inference_mode():
                setattr(base, attr, layers)  # the unmodified model for the baseline
                setattr(config, n_layers_key, n)
                ref = Reference.from_logits(model(input_ids=ids, use_cache=False).logits[:, first:], targets, has_target)
                for kind, layer in jobs:
                    order = list(range(layer)) + block_order(kind, layer, n)
                    setattr(base, attr, torch.nn.ModuleList([layers[i] for i in order]))
                    setattr(config, n_layers_key, len(order))
                    logits = model(input_ids=ids, use_cache=False).logits[:, first:]
                    values = compare(ref, logits, targets, has_target)
                    out[(kind, layer)].append(torch.stack(list(values.values())).cpu().numpy())
                    del logits, values
            del ref
    finally:
        setattr(base, attr, layers)
        setattr(config, n_layers_key, n)
    return {job: np.concatenate(parts, axis=1) for job, parts in out.items()}


def plain_forwards(model, tokens, batch_size, repeats=3):
    """Best-of-``repeats`` time of one plain batched forward pass over all tokens."""
    device = next(model.parameters()).device
    times = []
    for _ in range(repeats):
        t0, c0 = now(device), time.process_time()
        with torch.inference_mode():
            for start in range(0, len(tokens), batch_size):
                model(input_ids=tokens[start : start + batch_size].to(device), use_cache=False).logits
        times.append((now(device) - t0, time.process_time() - c0))
    return min(times)  # (wall, process CPU) of the fastest


def timed_engine(model, tokens, jobs, batch_size, first, device, **kwargs):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0, c0 = now(device), time.process_time()
    df = run_sweep(model, tokens, jobs, batch_size=batch_size, first=first, progress=False, **kwargs)
    wall, cpu = now(device) - t0, time.process_time() - c0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    df.attrs["cpu_s"] = cpu
    return df, wall, peak


def metric_diff(df_ref, df):
    """How much the per-token metrics move (e.g. bfloat16 or TF32 against float32)."""
    kl_a, kl_b = df_ref.kl.to_numpy(np.float64), df.kl.to_numpy(np.float64)
    g_a = df_ref.groupby(["kind", "layer"], observed=True).kl.mean()
    g_b = df.groupby(["kind", "layer"], observed=True).kl.mean()
    return {
        "mean_kl_float32": float(kl_a.mean()),
        "mean_abs_token_kl_diff": float(np.abs(kl_b - kl_a).mean()),
        "max_abs_token_kl_diff": float(np.abs(kl_b - kl_a).max()),
        "max_abs_layer_mean_kl_diff": float((g_b - g_a).abs().max()),
        "max_rel_layer_mean_kl_diff": float(((g_b - g_a).abs() / g_a.abs().clip(lower=1e-12)).max()),
        "top1_agree_flips": float((df.top1_agree.to_numpy() != df_ref.top1_agree.to_numpy()).mean()),
        "mean_abs_entropy_change_diff_bits": float(
            np.abs(df.entropy_change.to_numpy(np.float64) - df_ref.entropy_change.to_numpy(np.float64)).mean()),
    }


def metric_kernel_times(device, shape, repeats=10):
    """Seconds per intervention for the metrics alone: eager vs torch.compile."""
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(shape, device=device, generator=g) * 3
    base = torch.randn(shape, device=device, generator=g) * 3
    targets = torch.randint(0, shape[-1], shape[:-1], device=device, generator=g)
    has = torch.ones(shape[:-1], dtype=torch.bool, device=device)
    ref = Reference.from_logits(base, targets, has)
    args = (logits, ref.p, ref.neg_entropy_nats, ref.argmax, ref.safe_targets, has)
    res = {}
    for name, fn in (("eager", metrics_kernel), ("compiled", torch.compile(metrics_kernel))):
        with torch.inference_mode():
            t0 = now(device)
            want = fn(*args)
            res[f"{name}_first_call_s"] = now(device) - t0
            t0 = now(device)
            for _ in range(repeats):
                got = fn(*args)
            res[f"{name}_s"] = (now(device) - t0) / repeats
        if name == "eager":
            ref_out = want
        else:
            res["compiled_max_abs_diff"] = float((got - ref_out).nan_to_num().abs().max())
    return res


# --------------------------------------------------------------------------------------


MODES = ("float32", "tf32", "bfloat16")


def set_mode(model, mode):
    """float32: true float32 matmuls; tf32: float32 storage, TF32 tensor-core matmuls
    (runtime.matmul_precision: high); bfloat16: weights cast in place (run it last)."""
    torch.set_float32_matmul_precision("high" if mode == "tf32" else "highest")
    if mode == "bfloat16":
        model.to(torch.bfloat16)


def run_mode(mode, model, tokens, jobs, tokenizer, first, args, device, df_ref):
    n = len(_decoder_layers(model))
    r = {"mode": mode}
    set_mode(model, mode)
    if mode in args.subset_modes:  # only the metrics' change, on a subset of interventions
        sub = jobs[:: max(1, len(jobs) // args.subset_jobs)]
        df, r["engine_subset_s"], _ = timed_engine(model, tokens, sub, args.batch_size, first, device)
        ref = df_ref[df_ref.set_index(["kind", "layer"]).index.isin(sub)].reset_index(drop=True)
        r.update(subset_jobs=sub, vs_float32=metric_diff(ref, df))
        print(f"[{mode}] (c) on {len(sub)} interventions: {r['engine_subset_s']:.2f} s", flush=True)
        return r, df
    with torch.inference_mode():  # warm-up (kernels, allocator)
        model(input_ids=tokens[: args.batch_size].to(device), use_cache=False)
    run_sweep(model, tokens[: args.batch_size], jobs[:2], batch_size=args.batch_size, first=first, progress=False)
    r["plain_forward_s"], r["plain_forward_cpu_s"] = plain_forwards(model, tokens, args.batch_size)
    print(f"[{mode}] plain forward over all tokens: {r['plain_forward_s']:.3f} s", flush=True)

    # (c) the engine, eager metrics (compile=False), then with compiled metrics
    df_c, r["engine_s"], r["engine_peak_gib"] = timed_engine(model, tokens, jobs, args.batch_size, first, device)
    r["engine_cpu_s"] = df_c.attrs["cpu_s"]
    print(f"[{mode}] (c) engine: {r['engine_s']:.2f} s, peak GPU memory {r['engine_peak_gib']:.2f} GiB", flush=True)
    if df_ref is not None:
        r["vs_float32"] = metric_diff(df_ref, df_c)
    if device.type == "cuda" and mode in args.compile_modes:
        t0 = now(device)
        run_sweep(model, tokens[: args.batch_size], jobs[:2], batch_size=args.batch_size, first=first,
                  progress=False, compile=True)
        r["compile_warmup_s"] = now(device) - t0
        df_cc, r["engine_compile_s"], _ = timed_engine(model, tokens, jobs, args.batch_size, first, device,
                                                       compile=True)
        r["compile_max_abs_kl_diff"] = float(np.abs(df_cc.kl.to_numpy() - df_c.kl.to_numpy()).max())
        print(f"[{mode}] (c) engine, compiled metrics: {r['engine_compile_s']:.2f} s "
              f"(warm-up {r['compile_warmup_s']:.1f} s)", flush=True)
        del df_cc

    # (b) plain batched sweep
    if "b" not in args.skip:
        t0, c0 = now(device), time.process_time()
        out_b = batched_sweep(model, tokens, jobs, args.batch_size, first)
        r["batched_s"], r["batched_cpu_s"] = now(device) - t0, time.process_time() - c0
        kl_b = np.concatenate([out_b[j][0].reshape(-1) for j in jobs])
        r["batched_vs_engine_max_abs_kl_diff"] = float(np.abs(kl_b - df_c.kl.to_numpy()).max())
        print(f"[{mode}] (b) batched: {r['batched_s']:.2f} s (max |KL(b) - KL(c)| = "
              f"{r['batched_vs_engine_max_abs_kl_diff']:.2e})", flush=True)
        del out_b

    # (a) the authors' loop structure, on a subset, extrapolated
    if "a" not in args.skip:
        k = args.authors_layers
        pick = {kind: [layers_for(kind, n)[i] for i in np.linspace(0, len(layers_for(kind, n)) - 1, k).round().astype(int)]
                for kind in ("drop", "swap")}
        sub_jobs = [(kind, layer) for kind in ("drop", "swap") for layer in pick[kind]]
        n_a = args.authors_seqs if mode == args.modes[0] else args.authors_seqs_other
        n_a = min(n_a or args.n_seq, args.n_seq)
        t0 = now(device)
        samples, rows = authors_loop(model, tokens, sub_jobs, tokenizer, first, n_a)
        measured = now(device) - t0
        est, est_cpu = (sum(len(layers_for(kind, n)) * (statistics.mean(samples[kind]["rebuild" + x])
                                                        + statistics.mean(samples[kind]["per_seq" + x]) * args.n_seq)
                            for kind in ("drop", "swap")) for x in ("", "_cpu"))
        n_pos = tokens.shape[1] - first
        kl_a = np.asarray(rows["kl"]).reshape(len(sub_jobs), n_a, n_pos)
        kl_c = np.stack([df_c[(df_c.kind == kind) & (df_c.layer == layer)].kl.to_numpy().reshape(args.n_seq, n_pos)[:n_a]
                         for kind, layer in sub_jobs])
        r.update(authors_s=est, authors_cpu_s=est_cpu, authors_measured_s=measured, authors_jobs=sub_jobs, authors_seqs=n_a,
                 authors_samples=samples, authors_vs_engine_max_abs_kl_diff=float(np.abs(kl_a - kl_c).max()))
        print(f"[{mode}] (a) authors: measured {measured:.2f} s on {len(sub_jobs)} interventions x {n_a} sequences; "
              f"extrapolated to all {len(jobs)} x {args.n_seq}: {est:.1f} s "
              f"(max |KL(a) - KL(c)| = {r['authors_vs_engine_max_abs_kl_diff']:.2e})", flush=True)
        del rows
    return r, df_c


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", choices=["smollm2", *SHAPES])
    p.add_argument("--device", default="auto")
    p.add_argument("--n-seq", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--modes", default=None,
                   help="comma list of float32, tf32, bfloat16 (default: all on CUDA; float32,bfloat16 on CPU)")
    p.add_argument("--authors-layers", type=int, default=2, help="layers per kind timed for (a)")
    p.add_argument("--authors-seqs", type=int, default=None, help="sequences timed for (a), first mode (default all)")
    p.add_argument("--authors-seqs-other", type=int, default=4, help="sequences timed for (a), other modes")
    p.add_argument("--compile-modes", default="tf32,bfloat16", help="modes in which (c) is also run with compile=True")
    p.add_argument("--skip", default="", help="comma list of parts to skip: a,b")
    p.add_argument("--subset-modes", default="", help="modes timed only for (c) on --subset-jobs interventions "
                   "(for the metrics' change; e.g. bfloat16 on a CPU without bf16 units)")
    p.add_argument("--subset-jobs", type=int, default=6)
    p.add_argument("--oom-test", action="store_true", help="force CUDA OOM via a memory fraction")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="smoke test: tiny sizes")
    p.add_argument("--json", default=None, help="write all numbers here")
    args = p.parse_args(argv)
    if args.quick:
        args.n_seq, args.seq_len, args.batch_size, args.authors_layers = 4, 32, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    args.skip = set(filter(None, args.skip.split(",")))
    args.compile_modes = set(filter(None, args.compile_modes.split(",")))
    args.subset_modes = set(filter(None, args.subset_modes.split(",")))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if args.modes is None:
        args.modes = "float32,tf32,bfloat16" if device.type == "cuda" else "float32,bfloat16"
    args.modes = [m for m in MODES if m in args.modes.split(",")]  # bfloat16 (in-place cast) last
    torch.set_float32_matmul_precision("highest")

    info = {
        "model": args.model, "device": str(device), "torch": torch.__version__,
        "host": platform.node(), "cpu_threads": torch.get_num_threads(),
        "load_avg_start": os.getloadavg()[0],
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    t0 = time.perf_counter()
    tokenizer = load_tokenizer()
    model, desc = build_model(args.model, device)
    info["build_s"] = time.perf_counter() - t0
    info["model_desc"] = desc
    n = len(_decoder_layers(model))
    vocab = model.config.vocab_size
    tokens, first = make_tokens(tokenizer, args.n_seq, args.seq_len, vocab)
    jobs = [(k, layer) for k in ("drop", "swap") for layer in layers_for(k, n)]
    n_pos = args.seq_len - first
    info.update(n_layers=n, vocab=vocab, n_seq=args.n_seq, seq_len=args.seq_len, batch_size=args.batch_size,
                n_interventions=len(jobs), params=sum(p.numel() for p in model.parameters()),
                work=args.n_seq * n_pos * len(jobs))
    print(f"# {args.model} on {info.get('gpu', 'CPU')} ({desc}); N={n}, {len(jobs)} interventions, "
          f"{args.n_seq} x {args.seq_len} tokens, batch {args.batch_size}", flush=True)

    info["modes"] = {}
    df_ref = None
    for mode in args.modes:
        if mode == "bfloat16" and args.oom_test and device.type == "cuda":
            try:  # in float32, before the in-place cast
                set_mode(model, "float32")
                info["oom"] = oom_test(model, tokens, jobs, args.batch_size, first, device)
            except Exception as exc:  # noqa: BLE001 - report, don't lose the rest of the run
                info["oom"] = {"error": repr(exc)[:300]}
            print(f"OOM fallback: {info['oom']}", flush=True)
        r, df = run_mode(mode, model, tokens, jobs, tokenizer, first, args, device,
                         df_ref if mode != "float32" else None)
        info["modes"][mode] = r
        if mode == "float32":
            df_ref = df
        del df
        gc.collect()
    if device.type == "cuda" and "metric_kernel" not in args.skip:
        info["metric_kernel"] = metric_kernel_times(device, (args.batch_size, n_pos, vocab))

    info["load_avg_end"] = os.getloadavg()[0]
    report(info)
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=1, default=str))
    return info


def oom_test(model, tokens, jobs, batch_size, first, device):
    """Cap this process's CUDA memory so that ``batch_size`` does not fit: the sweep must
    halve its batch until it does, and give the same numbers as without the cap."""
    sub = jobs[:2]
    weights = torch.cuda.memory_allocated(device)
    want, _, peak = timed_engine(model, tokens, sub, batch_size, first, device)
    total = torch.cuda.get_device_properties(device).total_memory
    cap = weights + (peak * 2**30 - weights) / 3
    torch.cuda.set_per_process_memory_fraction(cap / total, device)
    try:
        sweep = Sweep(model)
        df, t, peak_capped = timed_engine(sweep, tokens, sub, batch_size, first, device)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    diff = np.abs(df.kl.to_numpy() - want.kl.to_numpy())
    return dict(cap_gib=round(cap / 2**30, 2), peak_uncapped_gib=round(peak, 2), peak_capped_gib=round(peak_capped, 2),
                start_batch=batch_size, final_batch=sweep.final_batch_size,
                max_abs_kl_diff=float(diff.max()), max_rel_kl_diff=float((diff / np.abs(want.kl.to_numpy()).clip(1e-6)).max()))


def report(info):
    n, work = info["n_layers"], info["work"]
    print()
    print(f"## {info['model']}: {info.get('gpu', 'CPU (%d threads)' % info['cpu_threads'])}, "
          f"N={n}, {info['n_interventions']} interventions, {info['n_seq']} x {info['seq_len']} tokens, "
          f"batch {info['batch_size']}")
    print()
    print("| mode | loop | wall s | token-interventions/s |")
    print("| --- | --- | ---: | ---: |")
    for mode, r in info["modes"].items():
        if "engine_s" not in r:
            print(f"| {mode} | (c) engine on {len(r['subset_jobs'])} interventions only | "
                  f"{r['engine_subset_s']:.2f} | - |")
            continue
        rows = [("(a) authors' loop (extrapolated)", r.get("authors_s")),
                ("(b) plain batched sweep", r.get("batched_s")),
                ("(c) engine (run_sweep)", r["engine_s"]),
                ("(c) engine, compiled metrics", r.get("engine_compile_s")),
                ("N x one plain batched forward", n * r["plain_forward_s"])]
        for name, t in rows:
            if t is not None:
                print(f"| {mode} | {name} | {t:.2f} | {work / t:,.0f} |")
    print()
    print("| mode | (a)/(c) | (b)/(c) | (c)/(N x fwd) | (c compiled)/(N x fwd) | peak GPU GiB (c) "
          "| max abs KL (a) vs (c) | max abs KL (b) vs (c) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode, r in info["modes"].items():
        if "engine_s" not in r:
            continue
        c, nf = r["engine_s"], n * r["plain_forward_s"]
        cells = [
            f"{r['authors_s'] / c:.1f}" if r.get("authors_s") else "-",
            f"{r['batched_s'] / c:.2f}" if r.get("batched_s") else "-",
            f"{c / nf:.3f}",
            f"{r['engine_compile_s'] / nf:.3f}" if r.get("engine_compile_s") else "-",
            f"{r['engine_peak_gib']:.2f}" if r["engine_peak_gib"] == r["engine_peak_gib"] else "-",
            f"{r['authors_vs_engine_max_abs_kl_diff']:.1e}" if "authors_vs_engine_max_abs_kl_diff" in r else "-",
            f"{r['batched_vs_engine_max_abs_kl_diff']:.1e}" if "batched_vs_engine_max_abs_kl_diff" in r else "-",
        ]
        print(f"| {mode} | " + " | ".join(cells) + " |")
    if not info["device"].startswith("cuda"):
        print()
        print("Process CPU time (all threads; less sensitive than wall time to other processes on a shared CPU):")
        print()
        print("| mode | (a) CPU s | (b) CPU s | (c) CPU s | N x fwd CPU s | (a)/(c) | (b)/(c) | (c)/(N x fwd) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for mode, r in info["modes"].items():
            if "engine_cpu_s" not in r:
                continue
            c, nf = r["engine_cpu_s"], n * r["plain_forward_cpu_s"]
            a, b = r.get("authors_cpu_s"), r.get("batched_cpu_s")
            print(f"| {mode} | {a or float('nan'):.1f} | {b or float('nan'):.1f} | {c:.1f} | {nf:.1f} | "
                  f"{(a or float('nan')) / c:.1f} | {(b or float('nan')) / c:.2f} | {c / nf:.3f} |")
    print()
    for mode, r in info["modes"].items():
        if "vs_float32" in r:
            d = r["vs_float32"]
            n_jobs = len(r["subset_jobs"]) if "subset_jobs" in r else info["n_interventions"]
            print(f"{mode} vs float32, per token over {n_jobs} of {info['n_interventions']} interventions: "
                  f"mean |dKL| {d['mean_abs_token_kl_diff']:.2e} nats (mean KL {d['mean_kl_float32']:.3e}), "
                  f"max |dKL| {d['max_abs_token_kl_diff']:.2e}, max |d layer-mean KL| "
                  f"{d['max_abs_layer_mean_kl_diff']:.2e} (relative {d['max_rel_layer_mean_kl_diff']:.2%}), "
                  f"top-1 agreement flips {d['top1_agree_flips']:.2%}, mean |d entropy change| "
                  f"{d['mean_abs_entropy_change_diff_bits']:.2e} bits")
        if "compile_max_abs_kl_diff" in r:
            print(f"{mode}: compiled vs eager metrics max |dKL| {r['compile_max_abs_kl_diff']:.1e}, "
                  f"compile warm-up {r['compile_warmup_s']:.1f} s")
    if "metric_kernel" in info:
        m = info["metric_kernel"]
        print(f"metrics alone, per intervention and batch of {info['batch_size']} (float32 logits): "
              f"eager {m['eager_s'] * 1e3:.2f} ms, compiled {m['compiled_s'] * 1e3:.2f} ms")
    if "oom" in info:
        print(f"OOM fallback (float32): {info['oom']}")
    if "bridge" in info:
        b = info["bridge"]
        print(f"(c) on {b['n_jobs']} interventions ({b['dtype']}): TransformerLens bridge blocks "
              f"{b['engine_bridge_s']:.2f} s, unwrapped SDPA modules {b['engine_sdpa_s']:.2f} s")
    print(f"load average: {info['load_avg_start']:.1f} at start, {info['load_avg_end']:.1f} at end")


if __name__ == "__main__":
    main()
