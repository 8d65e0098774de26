"""The core engine every study runs its model through: prefix caching, block edits,
ablation hooks.

One baseline forward pass per batch records, with a forward pre-hook
(``with_kwargs=True``) on every transformer block, the exact call each block received:
the residual stream entering it plus the position embeddings, masks and the like. A run
that changes nothing before block L starts from the recorded residual entering L and
replays only the blocks it needs, in any order (``run_from``):

* ``drop L``: blocks L+1, ..., N-1 (block L is skipped: the residual passes unchanged);
* ``swap L``: blocks L+1, L, L+2, ..., N-1 (blocks L and L+1 exchange positions);
* any other list of blocks: skip, reorder, repeat;
* with hooks on a head's or an MLP's output (TransformerLens hook names, below), so an
  ablation of a component of block L also costs only the blocks from L on;
* ``repeat=k``: k variants of the batch in one pass (the cached residual and every
  recorded argument tiled along the batch), e.g. one ablated head per variant.

Each block is called with its own recorded keyword arguments, so a block keeps its own
attention type when it moves. No weights are copied or reloaded.

Hook points (TransformerLens names; ``L`` a block index):

==============================  ===========================================  ===============
``blocks.L.attn.hook_z``        per-head attention outputs before the output  [B, T, H, d_head]
                                projection (the projection's input)
``blocks.L.hook_attn_out``      attention output (after the projection)      [B, T, d_model]
``blocks.L.mlp.hook_post``      MLP neuron activations (the down projection's [B, T, d_mlp]
                                input)
``blocks.L.hook_mlp_out``       MLP output                                   [B, T, d_model]
==============================  ===========================================  ===============

A hook is ``(name, fn)``; ``fn(tensor)`` returns a replacement tensor, or ``None`` to leave
it as it is (a capture). Hooks apply to ``baseline`` and ``run_from`` alike.

Which modules run (``attn_implementation``):

* ``"sdpa"`` (default) or ``"eager"``: the plain ``transformers`` modules with that
  attention implementation. Given a ``TransformerBridge``, the engine unwraps it into a
  plain module tree that *shares* the bridge's parameters (no copy): TransformerLens
  boots with eager attention and wraps every linear map and norm in a hook point, which
  the engine does not need. Given a ``transformers`` model, it is used directly (a
  parameter-sharing clone only if its attention implementation differs).
* ``"bridge"``: the ``TransformerBridge``'s own blocks, hooks and all (slowest; drop/swap
  only, no engine hooks).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

log = logging.getLogger(__name__)

KINDS = ("drop", "swap")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "bridge")


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
# The modules that run: a bridge's own blocks, or a plain transformers module tree


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
    """A plain ``transformers`` model for the sweep, sharing ``model``'s parameters.

    ``model`` is a ``TransformerBridge`` (its bridge components are unwrapped) or a
    ``transformers`` model. The result is a shallow clone of the module tree: new module
    objects and a new config (so the attention implementation can differ), the very same
    parameter and buffer tensors. Nothing is copied on the device.
    """
    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"attn_implementation {attn_implementation!r}: use sdpa or eager here.")
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


def _decoder_layers(model) -> torch.nn.ModuleList:
    n = getattr(model.config, "num_hidden_layers", None)
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    for name in ("layers", "h", "blocks"):
        layers = getattr(base, name, None)
        if isinstance(layers, torch.nn.ModuleList) and (n is None or len(layers) == n):
            return layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"Cannot find the decoder layers of {type(model).__name__}.")


def _final_norm(model):
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    for name in ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm"):
        module = getattr(base, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ValueError(f"Cannot find the final norm of {type(model).__name__}.")


def _child(module, names: Sequence[str], what: str, owner: str):
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, torch.nn.Module):
            return child
    raise ValueError(f"Cannot find the {what} of {owner} ({type(module).__name__}); looked for {', '.join(names)}.")


ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
ATTN_OUT_NAMES = ("o_proj", "c_proj", "dense", "out_proj")
MLP_NAMES = ("mlp", "feed_forward")
MLP_OUT_NAMES = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2")

HOOK_PATTERN = re.compile(r"^blocks\.(\d+)\.(attn\.hook_z|hook_attn_out|mlp\.hook_post|hook_mlp_out)$")
HOOK_SITES = ("attn.hook_z", "hook_attn_out", "mlp.hook_post", "hook_mlp_out")

Hook = tuple[str, Callable[[torch.Tensor], "torch.Tensor | None"]]


def parse_hook_name(name: str) -> tuple[int, str]:
    """``"blocks.3.attn.hook_z"`` -> ``(3, "attn.hook_z")``."""
    match = HOOK_PATTERN.match(name)
    if not match:
        raise ValueError(
            f"Unknown hook {name!r}; the engine has blocks.L.<site> with site one of {', '.join(HOOK_SITES)}."
        )
    return int(match.group(1)), match.group(2)


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_first(output, value):
    if isinstance(output, tuple):
        return (value, *output[1:])
    if isinstance(output, list):
        return [value, *output[1:]]
    return value


@dataclass
class BlockCall:
    args: tuple
    kwargs: dict

    @property
    def hidden(self) -> torch.Tensor:
        return self.args[0] if self.args else self.kwargs["hidden_states"]

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


@dataclass
class Engine:
    """Runs one model from cached residuals with block edits and hooks (module docstring).

    ``bridge`` is a ``TransformerBridge`` or a ``transformers`` causal LM;
    ``attn_implementation`` picks the modules that run.
    """

    bridge: object
    attn_implementation: str = "sdpa"
    calls: list[BlockCall] = field(default_factory=list)

    def __post_init__(self):
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation is {self.attn_implementation!r}; use one of "
                f"{', '.join(ATTN_IMPLEMENTATIONS)}."
            )
        if self.attn_implementation == "bridge":
            if not is_bridge(self.bridge):
                raise ValueError("attn_implementation 'bridge' needs a TransformerBridge.")
            self.model = self.bridge.original_model
            self.blocks = list(self.bridge.blocks)
            self._norm, self._head = self.bridge.ln_final, self.bridge.unembed
        else:
            self.model = plain_model(self.bridge, self.attn_implementation)
            self.blocks = list(_decoder_layers(self.model))
            self._norm, self._head = _final_norm(self.model), self.model.get_output_embeddings()
        self.n_layers = len(self.blocks)
        config = self.model.config
        self.n_heads = int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head"))
        d_model = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd"))
        self.d_head = int(getattr(config, "head_dim", None) or d_model // self.n_heads)
        self.checked = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- modules and weights ----------------------------------------------------------
    @property
    def final_norm(self) -> torch.nn.Module:
        return self._norm

    @property
    def lm_head(self) -> torch.nn.Module:
        return self._head

    def _plain_block(self, layer: int):
        if self.attn_implementation == "bridge":
            raise ValueError("Engine hooks and component weights need attn_implementation sdpa or eager.")
        return self.blocks[layer]

    def attn(self, layer: int) -> torch.nn.Module:
        return _child(self._plain_block(layer), ATTN_NAMES, "attention", f"block {layer}")

    def mlp(self, layer: int) -> torch.nn.Module:
        return _child(self._plain_block(layer), MLP_NAMES, "MLP", f"block {layer}")

    def attn_out_proj(self, layer: int) -> torch.nn.Module:
        """The attention output projection; its input is ``hook_z`` flattened over heads."""
        return _child(self.attn(layer), ATTN_OUT_NAMES, "attention output projection", f"block {layer}")

    def mlp_out_proj(self, layer: int) -> torch.nn.Module:
        """The MLP down projection; its input is ``mlp.hook_post``."""
        return _child(self.mlp(layer), MLP_OUT_NAMES, "MLP output projection", f"block {layer}")

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
        module = self.attn(layer) if site == "hook_attn_out" else self.mlp(layer)

        def hook(module, args, output):
            new = fn(_first(output))
            return None if new is None else _with_first(output, new)

        return module.register_forward_hook(hook)

    # -- baseline ---------------------------------------------------------------------
    def baseline(self, input_ids: torch.Tensor, hooks: Sequence[Hook] = ()) -> torch.Tensor:
        """Full forward pass; records every block's call. Returns logits [B, T, V]."""
        calls: list[BlockCall | None] = [None] * self.n_layers
        last: list[torch.Tensor] = []

        def make_hook(i):
            def hook(module, args, kwargs):
                calls[i] = BlockCall(tuple(args), dict(kwargs))

            return hook

        def last_hook(module, args, output):
            last.append(_first(output))

        handles = [
            block.register_forward_pre_hook(make_hook(i), with_kwargs=True)
            for i, block in enumerate(self.blocks)
        ]
        if not self.checked:
            handles.append(self.blocks[-1].register_forward_hook(last_hook))
        try:
            with self.hooks(hooks):
                out = self.model(input_ids=input_ids, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        if any(c is None for c in calls):
            raise RuntimeError("Some blocks were not called during the baseline pass.")
        self.calls = calls  # type: ignore[assignment]
        logits = out.logits
        if not self.checked:
            self._check_unembed(last[-1], logits)
        return logits

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
        order: Sequence[int] | None = None,
        positions: slice = slice(None),
        hooks: Sequence[Hook] = (),
        repeat: int = 1,
        output: str = "logits",
    ):
        """Run blocks ``order`` (default ``start..N-1``) on the cached residual entering
        block ``start``; return the logits at ``positions`` (``output="logits"``), the final
        residual before the final norm (``"residual"``), or both (``"both"``).

        ``repeat=k`` tiles the batch k times (variant-major) so that ``hooks`` can edit
        each variant differently in one pass; the result has batch ``k * B``.
        """
        if output not in ("logits", "residual", "both"):
            raise ValueError(f"output is {output!r}; use logits, residual or both.")
        if repeat < 1:
            raise ValueError(f"repeat is {repeat}; use at least 1.")
        order = list(range(start, self.n_layers)) if order is None else list(order)
        hidden = self.residual_in(start)
        if repeat > 1:
            hidden = hidden.repeat(repeat, *([1] * (hidden.dim() - 1)))
        calls = {j: self.calls[j].tiled(repeat) for j in set(order)}
        with self.hooks(hooks):
            for j in order:
                hidden = calls[j].replay(self.blocks[j], hidden)
        hidden = hidden[:, positions]
        if output == "residual":
            return hidden
        logits = self.unembed(hidden)
        return (hidden, logits) if output == "both" else logits

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._head(self._norm(hidden))

    def intervene(self, kind: str, layer: int, positions: slice = slice(None)) -> torch.Tensor:
        return self.run_from(layer, block_order(kind, layer, self.n_layers), positions)


Sweep = Engine  # the name the drop/swap sweep grew up with


def engine_for_job(manifest, runtime: dict, attn_implementation: str | None = None) -> Engine:
    """The engine over the model a job loads (``core.models.model_for_job``)."""
    from .models import model_for_job

    model, attn = model_for_job(manifest, runtime, attn_implementation)
    return Engine(model, attn_implementation=attn)
