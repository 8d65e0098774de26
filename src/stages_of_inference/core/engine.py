"""The core engine: the one way a study runs a model.

Every forward pass of every study goes through an :class:`Engine`: full passes with hooks
(``forward``, ``run_with_hooks``, ``run_with_cache``), passes that stop early (``run_to``:
"run up to block L and stop"), and runs from a cached residual with block edits
(``baseline`` + ``run_from``). It is also the one place that knows an architecture: which
module is a block's attention, MLP, output projection or post-norm, how the final norm
and unembedding read the residual stream, and how to fold them into weights.

Prefix caching. ``baseline`` records, with a forward pre-hook (``with_kwargs=True``) on
every transformer block, the exact call each block received: the residual stream entering
it plus the position embeddings, masks and the like. A run that changes nothing before
block L starts from the recorded residual entering L and replays only the blocks it needs,
in any order (``run_from``):

* ``drop L``: blocks L+1, ..., N-1 (block L is skipped: the residual passes unchanged);
* ``swap L``: blocks L+1, L, L+2, ..., N-1 (blocks L and L+1 exchange positions);
* any other list of blocks: skip, reorder, repeat; a tuple in the list is a *parallel*
  group (every block of it reads the same residual; their writes are averaged);
* with hooks (below), so an ablation of a component of block L costs only blocks L on;
* ``repeat=k``: k variants of the batch in one pass (the cached residual and every
  recorded argument tiled along the batch), e.g. one ablated head per variant.

Each block is called with its own recorded keyword arguments, so a block keeps its own
attention type (sliding window or full), its own rotary table and mask when it moves.
No weights are copied or reloaded.

Hook points: TransformerLens's names, the workflow's one vocabulary (``L`` a block index).
"Output" is always what a component *adds to the residual stream*: on models with
sandwich norms (Gemma 2/3) that is after the component's post-norm
(``post_attention_layernorm``, ``post_feedforward_layernorm``).

==============================  ==============================================  ===================
``blocks.L.hook_resid_pre``     residual stream entering block L                 [B, T, d_model]
``blocks.L.attn.hook_pattern``  attention probabilities (eager attention only)  [B, H, T_q, T_k]
``blocks.L.attn.hook_z``        per-head attention outputs, the output          [B, T, H, d_head]
                                projection's input
``blocks.L.hook_attn_out``      what attention adds to the residual stream       [B, T, d_model]
``blocks.L.mlp.hook_post``      MLP neuron activations, the down projection's   [B, T, d_mlp]
                                input
``blocks.L.hook_mlp_out``       what the MLP adds to the residual stream         [B, T, d_model]
``blocks.L.hook_resid_post``    residual stream leaving block L                  [B, T, d_model]
==============================  ==============================================  ===================

A hook is ``(name, fn)``; ``fn(tensor)`` returns a replacement tensor, or ``None`` to leave
it as it is (a capture). Hooks apply to every kind of pass alike. ``run_with_cache`` returns
the tensors of the names asked for, TransformerLens-style.

Which modules run (``attn_implementation``): ``"sdpa"`` (default) or ``"eager"`` (needed
for ``attn.hook_pattern``): the plain ``transformers`` modules with that attention
implementation. Given a ``TransformerBridge``, the engine unwraps it into a plain module
tree that *shares* the bridge's parameters (no copy). Given a ``transformers`` model, it
is used directly (a parameter-sharing clone only if its attention implementation differs).

Memory: :func:`batched` is the one out-of-memory policy (halve the batch, retry, keep the
smaller size), used by every study that streams data through the engine.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import logging
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

log = logging.getLogger(__name__)

KINDS = ("drop", "swap")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")

HOOK_SITES = (
    "hook_resid_pre",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)
HOOK_PATTERN = re.compile(r"^blocks\.(\d+)\.(" + "|".join(re.escape(s) for s in HOOK_SITES) + r")$")

Hook = tuple[str, Callable[[torch.Tensor], "torch.Tensor | None"]]


def hook_name(layer: int, site: str) -> str:
    """``hook_name(3, "attn.hook_z")`` -> ``"blocks.3.attn.hook_z"``."""
    if site not in HOOK_SITES:
        raise ValueError(f"Unknown hook site {site!r}; use one of {', '.join(HOOK_SITES)}.")
    return f"blocks.{layer}.{site}"


def parse_hook_name(name: str) -> tuple[int, str]:
    """``"blocks.3.attn.hook_z"`` -> ``(3, "attn.hook_z")``."""
    match = HOOK_PATTERN.match(name)
    if not match:
        raise ValueError(
            f"Unknown hook {name!r}; the engine has blocks.L.<site> with site one of {', '.join(HOOK_SITES)}."
        )
    return int(match.group(1)), match.group(2)


def layers_for(kind: str, n_layers: int) -> list[int]:
    """Valid intervention layers: drop 0..N-1, swap 0..N-2 (L swaps with L+1)."""
    if kind == "drop":
        return list(range(n_layers))
    if kind == "swap":
        return list(range(n_layers - 1))
    raise ValueError(f"Unknown intervention kind {kind!r}; use one of {', '.join(KINDS)}.")


def block_order(kind: str, layer: int, n_layers: int) -> list[int]:
    """Blocks run after the untouched prefix 0..layer-1, in order."""
    if layer not in layers_for(kind, n_layers):
        raise ValueError(f"{kind} at layer {layer} is out of range for a {n_layers}-layer model.")
    if kind == "drop":
        return list(range(layer + 1, n_layers))
    return [layer + 1, layer] + list(range(layer + 2, n_layers))


# --------------------------------------------------------------------------------------
# The one out-of-memory policy


def batched(n: int, batch_size: int, fn: Callable[[int, int], object], *, progress=None, device=None) -> list:
    """``fn(start, stop)`` over consecutive batches of ``n`` items; returns the results in
    order. On CUDA out-of-memory the batch is retried at half the size, and the smaller
    size is kept for the batches after (``batch_size=1`` that still fails re-raises).
    ``progress``: a tqdm bar to advance by each batch's size."""
    out = []
    start = 0
    batch_size = max(1, int(batch_size))
    while start < n:
        stop = min(start + batch_size, n)
        failed = False
        try:
            result = fn(start, stop)
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise
            failed = True  # recover outside the except block, so the traceback's tensors are freed
        if failed:
            batch_size = max(1, batch_size // 2)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.warning("CUDA out of memory: retrying with batch size %d", batch_size)
            continue
        out.append(result)
        if progress is not None:
            progress.update(stop - start)
        start = stop
    batched.last_batch_size = batch_size
    return out


# --------------------------------------------------------------------------------------
# The modules that run: a plain transformers module tree


def is_bridge(model) -> bool:
    return hasattr(model, "original_model") and hasattr(model, "blocks")


def _unwrapped(module):
    """The transformers module a TransformerLens bridge component wraps (itself if none)."""
    while "_original_component" in getattr(module, "_modules", {}) and type(module).__module__.startswith(
        "transformer_lens"
    ):
        module = module._modules["_original_component"]
    return module


def plain_model(model, attn_implementation: str = "sdpa"):
    """A plain ``transformers`` model sharing ``model``'s parameters.

    ``model`` is a ``TransformerBridge`` (its bridge components are unwrapped) or a
    ``transformers`` model. The result is a shallow clone of the module tree: new module
    objects and a new config (so the attention implementation can differ), the very same
    parameter and buffer tensors. Nothing is copied on the device.
    """
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation {attn_implementation!r}: use sdpa or eager.")
    root = model.original_model if is_bridge(model) else model
    if not is_bridge(model) and getattr(root.config, "_attn_implementation", None) == attn_implementation:
        return root
    old_config = root.config
    config = copy.deepcopy(old_config)
    config._attn_implementation = attn_implementation
    memo: dict[int, torch.nn.Module] = {}

    def clone(module):
        module = _unwrapped(module)
        if id(module) in memo:
            return memo[id(module)]
        new = copy.copy(module)
        memo[id(module)] = new
        state = new.__dict__
        for key, value in list(state.items()):
            if "hooks" in key and isinstance(value, dict):
                state[key] = type(value)()  # hooks on the clone never fire on the original
            elif value is old_config:
                state[key] = config
        state["_parameters"] = dict(module._parameters)
        state["_buffers"] = dict(module._buffers)
        state["_modules"] = {k: (None if m is None else clone(m)) for k, m in module._modules.items()}
        return new

    plain = clone(root)
    plain.eval()
    return plain


def _base_model(model):
    return getattr(model, getattr(model, "base_model_prefix", ""), model)


def _decoder_layers(model) -> torch.nn.ModuleList:
    n = getattr(model.config, "num_hidden_layers", None)
    base = _base_model(model)
    for name in ("layers", "h", "blocks"):
        layers = getattr(base, name, None)
        if isinstance(layers, torch.nn.ModuleList) and (n is None or len(layers) == n):
            return layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"Cannot find the decoder layers of {type(model).__name__}.")


def _final_norm(model):
    base = _base_model(model)
    for name in ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm"):
        module = getattr(base, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ValueError(f"Cannot find the final norm of {type(model).__name__}.")


def _child(module, names: Sequence[str], what: str, owner: str, required: bool = True):
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, torch.nn.Module):
            return child
    if not required:
        return None
    raise ValueError(f"Cannot find the {what} of {owner} ({type(module).__name__}); looked for {', '.join(names)}.")


ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
ATTN_OUT_NAMES = ("o_proj", "c_proj", "dense", "out_proj")
MLP_NAMES = ("mlp", "feed_forward")
MLP_OUT_NAMES = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2")


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_first(output, value):
    if isinstance(output, tuple):
        return (value, *output[1:])
    if isinstance(output, list):
        return [value, *output[1:]]
    return value


def _hidden_arg(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden_arg(args, kwargs, value):
    if args:
        return (value, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": value}


class _Stop(Exception):
    """Raised by a pre-hook to end a forward pass early (``run_to``)."""


@dataclass
class BlockCall:
    args: tuple
    kwargs: dict

    @property
    def hidden(self) -> torch.Tensor:
        return _hidden_arg(self.args, self.kwargs)

    def replay(self, block, hidden: torch.Tensor) -> torch.Tensor:
        if self.args:
            out = block(hidden, *self.args[1:], **self.kwargs)
        else:
            out = block(**{**self.kwargs, "hidden_states": hidden})
        return _first(out)

    def tiled(self, k: int) -> "BlockCall":
        """The same call for a batch repeated ``k`` times (variant-major). Every tensor
        argument whose first dimension is the batch (2 or more dimensions) is tiled;
        the others (e.g. ``cache_position`` [T]) are shared."""
        if k == 1:
            return self
        batch = self.hidden.shape[0]

        def tile(value):
            if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[0] == batch:
                return value.repeat(k, *([1] * (value.dim() - 1)))
            if isinstance(value, tuple):
                return tuple(tile(v) for v in value)
            if isinstance(value, list):
                return [tile(v) for v in value]
            return value

        return BlockCall(tuple(tile(a) for a in self.args), {key: tile(v) for key, v in self.kwargs.items()})


def _positions_index(positions, seq_len: int):
    """A slice or index tensor of positions -> what indexing ``hidden[:, here]`` uses."""
    return positions if isinstance(positions, slice) else torch.as_tensor(positions)


@dataclass
class Engine:
    """Runs one model with hooks, early stops and block edits (module docstring).

    ``model`` is a ``transformers`` causal LM (or a ``TransformerBridge``, unwrapped);
    ``attn_implementation`` picks the attention modules that run (``eager`` for patterns).
    """

    model_in: object
    attn_implementation: str = "sdpa"
    calls: list[BlockCall] = field(default_factory=list)

    def __post_init__(self):
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation is {self.attn_implementation!r}; use one of {', '.join(ATTN_IMPLEMENTATIONS)}."
            )
        self.model = plain_model(self.model_in, self.attn_implementation)
        self.model_in = None  # the engine owns the plain module tree only
        self.blocks = list(_decoder_layers(self.model))
        self._norm, self._head = _final_norm(self.model), self.model.get_output_embeddings()
        self._base = _base_model(self.model)
        self.n_layers = len(self.blocks)
        config = self.model.config
        self.config = config
        self.n_heads = int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head"))
        self.n_kv_heads = int(getattr(config, "num_key_value_heads", None) or self.n_heads)
        self.d_model = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd"))
        self.d_head = int(getattr(config, "head_dim", None) or self.d_model // self.n_heads)
        self.d_vocab = int(self._head.weight.shape[0])
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self.checked = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- modules and weights ----------------------------------------------------------
    @property
    def final_norm(self) -> torch.nn.Module:
        return self._norm

    @property
    def lm_head(self) -> torch.nn.Module:
        return self._head

    def attn(self, layer: int) -> torch.nn.Module:
        return _child(self.blocks[layer], ATTN_NAMES, "attention", f"block {layer}")

    def mlp(self, layer: int) -> torch.nn.Module:
        return _child(self.blocks[layer], MLP_NAMES, "MLP", f"block {layer}")

    def attn_out_proj(self, layer: int) -> torch.nn.Module:
        """The attention output projection; its input is ``hook_z`` flattened over heads."""
        return _child(self.attn(layer), ATTN_OUT_NAMES, "attention output projection", f"block {layer}")

    def mlp_out_proj(self, layer: int) -> torch.nn.Module:
        """The MLP down projection; its input is ``mlp.hook_post``."""
        return _child(self.mlp(layer), MLP_OUT_NAMES, "MLP output projection", f"block {layer}")

    @property
    def sandwich_norms(self) -> bool:
        """Whether attention and MLP outputs pass a post-norm before they join the residual
        stream (Gemma 2/3: ``post_attention_layernorm`` + ``post_feedforward_layernorm``;
        in Llama-style blocks ``post_attention_layernorm`` is the MLP's *input* norm)."""
        return getattr(self.blocks[0], "post_feedforward_layernorm", None) is not None

    def attn_post_norm(self, layer: int) -> torch.nn.Module | None:
        """The norm between attention and the residual stream (sandwich norms), or None."""
        return self.blocks[layer].post_attention_layernorm if self.sandwich_norms else None

    def mlp_post_norm(self, layer: int) -> torch.nn.Module | None:
        """The norm between the MLP and the residual stream (sandwich norms), or None."""
        return self.blocks[layer].post_feedforward_layernorm if self.sandwich_norms else None

    @property
    def layernorm(self) -> bool:
        """Whether the model's norms are LayerNorms (mean-centring) rather than RMSNorms."""
        return isinstance(self._norm, torch.nn.LayerNorm)

    @property
    def d_mlp(self) -> int:
        return int(self.mlp_out_weights(0).shape[0])

    @staticmethod
    def _in_out_weight(proj: torch.nn.Module) -> torch.Tensor:
        """A projection's weight as [d_in, d_out] (``nn.Linear`` stores [out, in], GPT-2's
        ``Conv1D`` [in, out])."""
        weight = proj.weight
        return weight if type(proj).__name__ == "Conv1D" else weight.T

    def head_out_weights(self, layer: int) -> torch.Tensor:
        """W_O of every head of ``layer``: [H, d_head, d_model] (a view, no copy)."""
        w = self._in_out_weight(self.attn_out_proj(layer))
        return w.reshape(self.n_heads, self.d_head, w.shape[-1])

    def mlp_out_weights(self, layer: int) -> torch.Tensor:
        """W_out of ``layer``'s MLP: [d_mlp, d_model]."""
        return self._in_out_weight(self.mlp_out_proj(layer))

    def norm_readout(self, norm: torch.nn.Module, probe: torch.Tensor):
        """``norm`` as a :class:`~stages_of_inference.core.norms.NormReadout` (gain, eps,
        centring, bias), checked on ``probe`` inputs."""
        from .norms import NormReadout

        return NormReadout.from_module(norm, probe)

    @torch.no_grad()
    def folded_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_out [n_layers, d_mlp, d_model], W_U [d_model, d_vocab])`` of the *folded*
        model, float32 on the CPU: what each neuron writes into the residual stream and how
        the final norm + unembedding read it, as in TransformerLens's processed weights
        (Gurnee et al.'s Universal Neurons):

        * the final norm's gain (``1 + w`` for Gemma's offset RMSNorm) is folded into
          ``W_U``, which is centred over the vocabulary (softmax ignores a constant) and,
          for LayerNorm models, over ``d_model`` (the norm's output has mean zero);
        * LayerNorm models: writing weights are centred over ``d_model`` (every LayerNorm
          removes the mean); RMSNorm models: left as they are;
        * sandwich norms: each neuron's write passes the MLP's post-norm, whose gain is
          folded into ``W_out`` (the norm's per-token scale is a positive scalar shared by
          every neuron of the token, so it changes no direction or cosine).
        """
        from .norms import norm_gain

        gain = norm_gain(self._norm, self.d_model).float()
        w_u = self._head.weight.detach().float().T * gain[:, None]  # [d_model, d_vocab]
        if self.layernorm:  # a LayerNorm's output has no mean over d_model: reading it is blind to it
            w_u = w_u - w_u.mean(0, keepdim=True)
        w_u = w_u - w_u.mean(1, keepdim=True)
        w_outs = []
        for layer in range(self.n_layers):
            w = self.mlp_out_weights(layer).detach().float()
            post = self.mlp_post_norm(layer)
            if post is not None:
                w = w * norm_gain(post, self.d_model).float()[None, :]
            if self.layernorm:
                w = w - w.mean(1, keepdim=True)
            w_outs.append(w.cpu())
        return torch.stack(w_outs).contiguous(), w_u.cpu().contiguous()

    # -- hooks ------------------------------------------------------------------------
    @contextlib.contextmanager
    def hooks(self, hooks: Sequence[Hook] = ()) -> Iterator[None]:
        """Install ``hooks`` (TransformerLens names) on the running modules while inside."""
        handles = []
        try:
            for name, fn in hooks:
                layer, site = parse_hook_name(name)
                if not 0 <= layer < self.n_layers:
                    raise ValueError(f"Hook {name!r}: the model has blocks 0..{self.n_layers - 1}.")
                handles.append(self._register(layer, site, fn))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _register(self, layer: int, site: str, fn):
        if site in ("attn.hook_z", "mlp.hook_post"):
            proj = self.attn_out_proj(layer) if site == "attn.hook_z" else self.mlp_out_proj(layer)
            split = site == "attn.hook_z"

            def pre_hook(module, args):
                x = args[0]
                view = x.reshape(*x.shape[:-1], self.n_heads, self.d_head) if split else x
                new = fn(view)
                if new is None:
                    return None
                return (new.reshape(x.shape), *args[1:])

            return proj.register_forward_pre_hook(pre_hook)
        if site == "hook_resid_pre":
            def resid_pre(module, args, kwargs):
                new = fn(_hidden_arg(args, kwargs))
                return None if new is None else _with_hidden_arg(args, kwargs, new)

            return self.blocks[layer].register_forward_pre_hook(resid_pre, with_kwargs=True)
        if site == "attn.hook_pattern":
            if self.attn_implementation != "eager":
                raise ValueError(
                    f"blocks.{layer}.attn.hook_pattern needs an engine with attn_implementation='eager' "
                    f"(this one runs {self.attn_implementation!r}, which never forms the pattern)."
                )

            def pattern_hook(module, args, output):
                pattern = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
                if pattern is None:
                    raise RuntimeError(f"block {layer}'s attention returned no attention pattern.")
                fn(pattern)  # capture only: a pattern is not fed back into the model
                return None

            return self.attn(layer).register_forward_hook(pattern_hook)
        if site == "hook_resid_post":
            module = self.blocks[layer]
        elif site == "hook_attn_out":
            module = self.attn_post_norm(layer) or self.attn(layer)
        else:  # hook_mlp_out
            module = self.mlp_post_norm(layer) or self.mlp(layer)

        def hook(module, args, output):
            new = fn(_first(output))
            return None if new is None else _with_first(output, new)

        return module.register_forward_hook(hook)

    # -- full passes ------------------------------------------------------------------
    def _logits(self, hidden_normed: torch.Tensor) -> torch.Tensor:
        logits = self._head(hidden_normed)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + unembedding of residual-stream vectors ``[..., d_model]``."""
        return self._logits(self._norm(hidden))

    def forward(self, input_ids: torch.Tensor, hooks: Sequence[Hook] = (), positions=slice(None),
                record: bool = False) -> torch.Tensor:
        """A full forward pass with ``hooks``; logits at ``positions`` (a slice or index
        tensor; the unembedding runs only there). ``record=True`` also records every block's
        call for ``run_from`` (what ``baseline`` does)."""
        calls: list[BlockCall | None] = [None] * self.n_layers
        last: list[torch.Tensor] = []
        handles = []
        if record:
            def make_hook(i):
                def hook(module, args, kwargs):
                    calls[i] = BlockCall(tuple(args), dict(kwargs))

                return hook

            handles += [block.register_forward_pre_hook(make_hook(i), with_kwargs=True)
                        for i, block in enumerate(self.blocks)]
        if not self.checked:
            handles.append(self.blocks[-1].register_forward_hook(lambda m, a, out: last.append(_first(out))))
        try:
            with self.hooks(hooks):
                normed = self._base(input_ids=input_ids, use_cache=False).last_hidden_state
        finally:
            for handle in handles:
                handle.remove()
        index = _positions_index(positions, input_ids.shape[1])
        logits = self._logits(normed[:, index])
        if record:
            if any(c is None for c in calls):
                raise RuntimeError("Some blocks were not called during the baseline pass.")
            self.calls = calls  # type: ignore[assignment]
        if not self.checked:
            self._check_unembed(last[-1][:, index], logits)
        return logits

    def baseline(self, input_ids: torch.Tensor, hooks: Sequence[Hook] = (), positions=slice(None)) -> torch.Tensor:
        """Full forward pass that records every block's call (for ``run_from``). Returns
        logits at ``positions`` ([B, T, V] by default)."""
        return self.forward(input_ids, hooks, positions, record=True)

    def run_with_hooks(self, input_ids: torch.Tensor, hooks: Sequence[Hook] = (), positions=slice(None),
                       stop_at: int | None = None):
        """TransformerLens's ``run_with_hooks``: logits at ``positions``, or, with
        ``stop_at=L``, nothing past block L-1 runs and the residual entering block L is
        returned (``stop_at=n_layers``: the final residual before the final norm)."""
        if stop_at is None:
            return self.forward(input_ids, hooks, positions)
        return self.run_to(input_ids, stop_at, hooks)

    def run_with_cache(self, input_ids: torch.Tensor, names: Sequence[str], positions=slice(None),
                       logits: bool = True, detach: bool = True):
        """TransformerLens's ``run_with_cache``: ``(logits or None, {name: tensor})`` for the
        hook ``names``. With ``logits=False`` the pass stops after the last block a name
        needs (nothing later runs, no unembedding)."""
        cache: dict[str, torch.Tensor] = {}

        def store(name):
            def fn(t):
                cache[name] = t.detach() if detach else t
                return None

            return fn

        hooks = [(name, store(name)) for name in names]
        if logits:
            return self.forward(input_ids, hooks, positions), cache
        last = max((parse_hook_name(n)[0] for n in names), default=-1)
        self.run_to(input_ids, last + 1, hooks)
        return None, cache

    def run_to(self, input_ids: torch.Tensor, layer: int, hooks: Sequence[Hook] = ()) -> torch.Tensor:
        """Run blocks 0..layer-1 and stop: the residual entering block ``layer``
        (``blocks.{layer}.hook_resid_pre``); ``layer = n_layers`` gives the final residual
        before the final norm. Nothing after it runs."""
        if not 0 <= layer <= self.n_layers:
            raise ValueError(f"run_to: layer {layer} is outside 0..{self.n_layers}.")
        captured = {}

        def at_end(module, args, output):
            captured["hidden"] = _first(output)
            raise _Stop

        def at_block(module, args, kwargs):
            captured["hidden"] = _hidden_arg(args, kwargs)
            raise _Stop

        with self.hooks(hooks):  # the stop comes after the caller's hooks on the same module
            if layer == self.n_layers:
                handle = self.blocks[-1].register_forward_hook(at_end)
            else:
                handle = self.blocks[layer].register_forward_pre_hook(at_block, with_kwargs=True)
            try:
                self._base(input_ids=input_ids, use_cache=False)
            except _Stop:
                pass
            finally:
                handle.remove()
        return captured["hidden"]

    def _check_unembed(self, hidden, logits):
        """Once per engine: norm + unembedding of the last block's output == the model's
        logits, i.e. the engine's head is the model's head (no missing scale or cap)."""
        with torch.no_grad():
            got = self.unembed(hidden)
        scale = logits.detach().abs().max().clamp(min=1.0)
        tol = 1e-3 if logits.dtype == torch.float32 else 5e-2
        if not torch.allclose(got.float(), logits.float(), atol=float(tol * scale), rtol=0):
            raise RuntimeError(
                f"{type(self.model).__name__}: final norm + unembedding does not reproduce the "
                f"model's logits; the engine does not support this architecture's head."
            )
        self.checked = True

    # -- runs from a cached residual ----------------------------------------------------
    def residual_in(self, layer: int) -> torch.Tensor:
        """The cached residual entering block ``layer`` (``blocks.L.hook_resid_pre``)."""
        if not self.calls:
            raise RuntimeError("No cached residuals: call baseline(input_ids) first.")
        return self.calls[layer].hidden

    def run_from(
        self,
        start: int,
        order: Sequence | None = None,
        positions=slice(None),
        hooks: Sequence[Hook] = (),
        repeat: int = 1,
        output: str = "logits",
        hidden: torch.Tensor | None = None,
    ):
        """Run blocks ``order`` (default ``start..N-1``) on the cached residual entering
        block ``start`` (or on ``hidden``); return the logits at ``positions``
        (``output="logits"``), the final residual before the final norm (``"residual"``), or
        both (``"both"``).

        An item of ``order`` that is a tuple of blocks runs them in *parallel*: each reads the
        same residual and the new residual is the mean of their outputs (every block adds its
        write to the same input, so this averages the writes). ``repeat=k`` tiles the batch
        k times (variant-major) so that ``hooks`` can edit each variant differently in one
        pass; the result has batch ``k * B``.
        """
        if output not in ("logits", "residual", "both"):
            raise ValueError(f"output is {output!r}; use logits, residual or both.")
        if repeat < 1:
            raise ValueError(f"repeat is {repeat}; use at least 1.")
        order = list(range(start, self.n_layers)) if order is None else list(order)
        if hidden is None:
            hidden = self.residual_in(start)
        elif not self.calls:
            raise RuntimeError("No recorded block calls: call baseline(input_ids) first.")
        if repeat > 1:
            hidden = hidden.repeat(repeat, *([1] * (hidden.dim() - 1)))
        used = {j for item in order for j in (item if isinstance(item, tuple) else (item,))}
        calls = {j: self.calls[j].tiled(repeat) for j in used}
        with self.hooks(hooks):
            for item in order:
                if isinstance(item, tuple):
                    outs = [calls[j].replay(self.blocks[j], hidden) for j in item]
                    hidden = torch.stack(outs).mean(0)
                else:
                    hidden = calls[item].replay(self.blocks[item], hidden)
        hidden = hidden[:, _positions_index(positions, hidden.shape[1])]
        if output == "residual":
            return hidden
        logits = self.unembed(hidden)
        return (hidden, logits) if output == "both" else logits

    def intervene(self, kind: str, layer: int, positions=slice(None)) -> torch.Tensor:
        return self.run_from(layer, block_order(kind, layer, self.n_layers), positions)


def engine_for_job(manifest, runtime: dict, attn_implementation: str | None = None) -> Engine:
    """The engine over the model a job loads (``core.models.model_for_job``);
    ``attn_implementation`` overrides ``runtime.attn_implementation`` (``eager`` for
    attention patterns)."""
    from .models import model_for_job

    model, attn = model_for_job(manifest, runtime, attn_implementation)
    return Engine(model, attn_implementation=attn)
