"""Seeded parameter initialisation and muP, with ModelZoo's GPT-J semantics.

Which initializer each tensor takes (ModelZoo `GPTJModel`):

| tensor | initializer | muP scaling of std (and of truncated_normal a/b) |
|---|---|---|
| `embed.weight` | `embedding_initializer` | none |
| `attn.qkv.weight` (q, k, v each) | `initializer` | width_mult^-0.5 |
| `attn.out.weight` | `output_layer_initializer` | width_mult^-0.5 * (2 * layers)^-0.5 |
| `mlp.fc_in.weight` | `ffn_initializer` (unset: a copy of output_layer_initializer) | width_mult^-0.5 |
| `mlp.fc_out.weight` | `ffn_output_initializer` (unset: a copy of output_layer_initializer) | filter_mult^-0.5 * (2 * layers)^-0.5 |
| `lm_head.weight` (untied only) | normal(0, initializer_range) | none |
| biases / LayerNorms | zeros / ones and zeros | none |

Unset initializers default to truncated_normal(mean 0, std initializer_range, a -2*range, b 2*range);
`truncated_normal`'s `a` and `b` are absolute bounds (torch's trunc_normal_), defaulting to +-2 std.
width_mult = hidden_size / mup_base_hidden_size, filter_mult = filter_size / mup_base_filter_size.
As in ModelZoo's GPT-J, the muP scaling applies only to initializers the config leaves unset (see
`resolved_initializers`); `mup_scale_all_initializers: true` applies it to all (ModelZoo's GPT-2).
The forward multipliers (embeddings_scale, output logits * alpha / width_mult, attention 1/d and
attention_logits_alpha) live in transformer.py; the per-parameter learning-rate scales of ModelZoo's
lr_adjustment_groups for AdamW (attention weights and fc_in: 1/width_mult; fc_out: 1/filter_mult) are
in `optimizer_param_groups`.
"""

from __future__ import annotations

import copy
import math
import zlib
from typing import Any

import torch
from torch import Tensor, nn

from gptx_cli.config.spec import ModelConfig
from gptx_cli.errors import ConfigError
from gptx_cli.model.transformer import Transformer

Initializer = dict[str, Any]


def default_initializer(cfg: ModelConfig) -> Initializer:
    r = cfg.initializer_range
    return {"name": "truncated_normal", "mean": 0.0, "std": r, "a": -2.0 * r, "b": 2.0 * r}


def _as_initializer(spec: Initializer | str | None, fallback: Initializer) -> Initializer:
    if spec is None:
        return copy.deepcopy(fallback)
    if isinstance(spec, str):
        return {"name": spec}
    if "name" not in spec:
        raise ConfigError(f"model initializer {spec}: 'name' is required")
    return copy.deepcopy(dict(spec))


def _scale(init: Initializer, factor: float) -> None:
    """ModelZoo scale_initializers_by_dimension: std (and truncated_normal's bounds) times factor."""
    name = init["name"].lower()
    if name == "normal":
        init["std"] = init.get("std", 1.0) * factor
    elif name == "truncated_normal":
        std = init.get("std", 1.0)
        init["std"] = std * factor
        init["a"] = init.get("a", -2.0 * std) * factor
        init["b"] = init.get("b", 2.0 * std) * factor
    else:
        raise ConfigError(
            f"model initializer {name!r}: muP scaling supports normal and truncated_normal only"
        )


def _given(cfg: ModelConfig) -> dict[str, bool]:
    """Which roles' initializers the config gives (ModelZoo parses them into initializer objects; the
    unset ones are default dicts, and ffn / ffn_output default to a copy of output_layer_initializer)."""
    output = cfg.output_layer_initializer is not None
    return {
        "attention": cfg.initializer is not None,
        "attention_output": output,
        "ffn": cfg.ffn_initializer is not None or output,
        "ffn_output": cfg.ffn_output_initializer is not None or output,
    }


def resolved_initializers(cfg: ModelConfig) -> dict[str, Initializer]:
    """The initializer of each tensor role after defaults and muP scaling (keys as in the table above).

    muP scaling follows ModelZoo's GPT-J (`models/nlp/gptj/gptj_model.py`, `GPTJModel.__init__`): it
    calls `scale_initializers_by_dimension` and drops its result, which scales only the default
    initializers (plain dicts, scaled in place) and leaves those the config gives (initializer objects,
    returned as scaled copies) as they are. `mup_scale_all_initializers: true` scales every one, as
    ModelZoo's GPT-2 does."""
    default = default_initializer(cfg)
    output = _as_initializer(cfg.output_layer_initializer, default)
    inits = {
        "embedding": _as_initializer(cfg.embedding_initializer, default),
        "attention": _as_initializer(cfg.initializer, default),
        "attention_output": output,
        "ffn": _as_initializer(cfg.ffn_initializer, output),
        "ffn_output": _as_initializer(cfg.ffn_output_initializer, output),
        "lm_head": {"name": "normal", "mean": 0.0, "std": cfg.initializer_range},
    }
    depth = (2 * cfg.num_hidden_layers) ** -0.5 if cfg.num_hidden_layers else 1.0
    given = _given(cfg)
    factors: dict[str, float] = {}
    if cfg.mup_base_hidden_size:
        width_mult = cfg.hidden_size / cfg.mup_base_hidden_size
        factors |= {"attention": width_mult**-0.5, "ffn": width_mult**-0.5}
        factors["attention_output"] = width_mult**-0.5 * depth
    if cfg.mup_base_filter_size:
        filter_mult = cfg.filter_size / cfg.mup_base_filter_size
        factors["ffn_output"] = filter_mult**-0.5 * depth
    for role, factor in factors.items():
        scaled = copy.deepcopy(inits[role])
        _scale(scaled, factor)  # also for a given one: ModelZoo refuses what it cannot scale
        if cfg.mup_scale_all_initializers or not given[role]:
            inits[role] = scaled
    return inits


def mup_init_note(cfg: ModelConfig) -> str | None:
    """The line a muP run prints when ModelZoo's GPT-J rule leaves initializers the config gives unscaled."""
    if not cfg.uses_mup or cfg.mup_scale_all_initializers:
        return None
    tensors = {"attention": "q/k/v", "attention_output": "attn.out", "ffn": "fc_in", "ffn_output": "fc_out"}
    given = [tensors[role] for role, yes in _given(cfg).items() if yes]
    if not given:
        return None
    return (
        f"muP: the initializers the config gives ({', '.join(given)} weights) are not scaled by width, as in "
        "ModelZoo's GPT-J (models/nlp/gptj/gptj_model.py, GPTJModel.__init__ drops "
        "scale_initializers_by_dimension's result); model.mup_scale_all_initializers: true scales them, "
        "as ModelZoo's GPT-2 does"
    )


def _fans(t: Tensor) -> tuple[int, int]:
    return nn.init._calculate_fan_in_and_fan_out(t)


def apply_initializer(t: Tensor, init: Initializer, generator: torch.Generator | None = None) -> None:
    """Fill `t` in place as ModelZoo's create_initializer(init) would (torch.nn.init underneath)."""
    name = init["name"].lower()
    g = generator
    with torch.no_grad():
        if name == "truncated_normal":
            std = init.get("std", 1.0)
            nn.init.trunc_normal_(
                t,
                init.get("mean", 0.0),
                std,
                init.get("a", -2.0 * std),
                init.get("b", 2.0 * std),
                generator=g,
            )
        elif name == "normal":
            nn.init.normal_(t, init.get("mean", 0.0), init.get("std", 1.0), generator=g)
        elif name == "uniform":
            nn.init.uniform_(t, init.get("a", 0.0), init.get("b", 1.0), generator=g)
        elif name in ("constant", "zeros", "ones"):
            fixed = {"zeros": 0.0, "ones": 1.0}
            t.fill_(fixed[name] if name in fixed else float(init.get("val", init.get("value")) or 0.0))
        elif name == "xavier_uniform":
            nn.init.xavier_uniform_(t, init.get("gain", 1.0), generator=g)
        elif name == "xavier_normal":
            nn.init.xavier_normal_(t, init.get("gain", 1.0), generator=g)
        elif name in ("kaiming_uniform", "kaiming_normal"):
            fn = nn.init.kaiming_uniform_ if name == "kaiming_uniform" else nn.init.kaiming_normal_
            fn(
                t,
                a=init.get("a", 0.0),
                mode=init.get("mode", "fan_in"),
                nonlinearity=init.get("nonlinearity", "leaky_relu"),
                generator=g,
            )
        elif name in ("variance_scaling", "lecun_normal", "lecun_uniform"):
            _variance_scaling(t, init, g)
        else:
            raise ConfigError(f"model initializer {init['name']!r} is not supported")


def _variance_scaling(t: Tensor, init: Initializer, g: torch.Generator | None) -> None:
    # TensorFlow / ModelZoo variance_scaling; lecun_* are its scale=1, fan_in special cases.
    name = init["name"].lower()
    scale = init.get("scale", 1.0)
    mode = init.get("mode", "fan_in")
    distribution = {"lecun_normal": "truncated_normal", "lecun_uniform": "uniform"}.get(
        name, init.get("distribution", "truncated_normal")
    )
    fan_in, fan_out = _fans(t)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    variance = scale / max(1.0, n)
    if distribution == "truncated_normal":
        std = math.sqrt(variance) / 0.87962566103423978  # std of a unit normal truncated at +-2
        nn.init.trunc_normal_(t, 0.0, std, -2 * std, 2 * std, generator=g)
    elif distribution in ("normal", "untruncated_normal"):
        nn.init.normal_(t, 0.0, math.sqrt(variance), generator=g)
    elif distribution == "uniform":
        limit = math.sqrt(3.0 * variance)
        nn.init.uniform_(t, -limit, limit, generator=g)
    else:
        raise ConfigError(f"model initializer variance_scaling: unknown distribution {distribution!r}")


def _role(name: str) -> str | None:
    if name == "embed.weight":
        return "embedding"
    if name.endswith("attn.qkv.weight"):
        return "attention"
    if name.endswith("attn.out.weight"):
        return "attention_output"
    if name.endswith("mlp.fc_in.weight"):
        return "ffn"
    if name.endswith("mlp.fc_out.weight"):
        return "ffn_output"
    if name == "lm_head.weight":
        return "lm_head"
    return None


def init_model(cfg: ModelConfig, device: str | torch.device = "cpu", seed: int | None = None) -> Transformer:
    """A freshly initialised model (train mode), built where it runs: no host copy of a large model."""
    with torch.device(device):
        model = Transformer(cfg)
    initialize_parameters(model, cfg, seed=seed)
    return model


def initialize_parameters(model: nn.Module, cfg: ModelConfig, seed: int | None = None) -> None:
    """Initialise every parameter of a Transformer in place, reproducibly for a given seed.

    Each parameter draws from its own generator on its own device, seeded from (seed, parameter name)
    (`initialize_tensor`): a GPU initialises a 6B model in seconds instead of drawing 6B numbers
    serially on the host, and the weights of one parameter do not depend on the others. The same seed
    gives the same weights on the same kind of device (CPU and CUDA generators differ). Parameters on
    the meta device are skipped (FSDP2 materialises them shard by shard with `initialize_tensor`).
    """
    inits = resolved_initializers(cfg)
    for name, p in model.named_parameters():
        if p.device.type != "meta":
            initialize_tensor(p, name, inits, seed)


def initialize_tensor(t: Tensor, name: str, inits: dict[str, Initializer], seed: int | None = None) -> None:
    """Fill `t`, the full value of parameter `name`, in place: the initializer of its role (`inits` from
    `resolved_initializers`) drawn from a generator on `t`'s device seeded from (seed, name), so that
    the same parameter gets the same numbers however and wherever the model is built."""
    base = 0 if seed is None else int(seed)
    role = _role(name)
    with torch.no_grad():
        if role is None:  # biases and LayerNorms
            t.fill_(1.0 if name.endswith("weight") and name.split(".")[-2].startswith("ln_") else 0.0)
            return
        g = torch.Generator(device=t.device).manual_seed(zlib.crc32(f"{base}:{name}".encode()) + base)
        target = t if t.dtype == torch.float32 else torch.empty(t.shape, dtype=torch.float32, device=t.device)
        if role == "attention":
            # q, k and v are separate [hidden, hidden] matrices for fans and draws, as in ModelZoo.
            for part in target.view(3, -1, target.shape[1]):
                apply_initializer(part, inits[role], g)
        else:
            apply_initializer(target, inits[role], g)
        if target is not t:
            t.copy_(target)


def optimizer_param_groups(model: nn.Module, cfg: ModelConfig) -> list[dict[str, Any]]:
    """Parameter groups for the optimizer: `params`, `names`, `lr_scale` and, for the parameters ModelZoo
    exempts from weight decay, `weight_decay: 0.0`; other groups leave weight decay to the config.

    Weight decay follows ModelZoo's `common/optim_utils.py: _should_apply_weight_decay`: every trainable
    parameter is decayed except biases and the parameters of normalisation layers. LoRA adapters
    (`lora_A`, `lora_B`) are therefore decayed, as in ModelZoo and Hugging Face.

    lr_scale is 1 except under muP (ModelZoo lr_adjustment_groups): q/k/v/out and fc_in weights get
    1/width_mult, fc_out weights 1/filter_mult. The trainer multiplies each group's scheduled LR by it.
    """
    width_mult = cfg.hidden_size / cfg.mup_base_hidden_size if cfg.mup_base_hidden_size else 1.0
    filter_mult = cfg.filter_size / cfg.mup_base_filter_size if cfg.mup_base_filter_size else 1.0
    exempt = _no_weight_decay(model)
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        role = _role(name)
        lr_scale = 1.0
        if role in ("attention", "attention_output", "ffn"):
            lr_scale = 1.0 / width_mult
        elif role == "ffn_output":
            lr_scale = 1.0 / filter_mult
        decay = name not in exempt
        group = groups.setdefault((lr_scale, decay), {"params": [], "names": [], "lr_scale": lr_scale})
        if not decay:
            group["weight_decay"] = 0.0
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


_NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._NormBase)


def _no_weight_decay(model: nn.Module) -> set[str]:
    """The parameters ModelZoo's _should_apply_weight_decay exempts: biases and normalisation layers'."""
    exempt = {name for name, _ in model.named_parameters() if "bias" in name}
    for module_name, module in model.named_modules():
        if isinstance(module, _NORM_LAYERS):
            prefix = f"{module_name}." if module_name else ""
            exempt |= {prefix + n for n, _ in module.named_parameters()}
    return exempt
