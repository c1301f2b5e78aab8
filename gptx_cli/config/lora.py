"""ModelZoo's `Lora` callback parameters, torch-free (validate-config and the memory guard use them).

`trainer.init.callbacks: [{Lora: {lora_params: {r, alpha, dropout, fan_in_fan_out, merge_weights,
target_modules}}}]`; `lora_params` is one dict or a list of dicts (ModelZoo's `LoraConfig`). A module
gets the first group whose `target_modules` names all appear in its chain of ModelZoo class names
(`get_lora_config_for_module`); `target_modules: null` targets every Linear and Embedding.

gptx's modules carry the class chain of the ModelZoo GPT-J / GPT-NeoX module they stand for, so the
names in a ModelZoo config select the same layers here:

| gptx module | ModelZoo class chain |
|---|---|
| `embed` | GptjModel, GPTJModel, EmbeddingLayer, Embedding |
| `layers.L.attn.qkv` (as q, k and v: three adapters) | ..., TransformerDecoder, ModuleList, GPTJDecoderLayer, MultiheadAttention, Linear |
| `layers.L.attn.out` | (same chain) |
| `layers.L.mlp.fc_in`, `fc_out` | ..., GPTJDecoderLayer, FeedForwardNetwork, ModuleList, SingleFeedForwardLayer, Linear |
| `lm_head` (untied models) | GptjModel, GPTJModel, Linear |

(GPT-NeoX models start with GPTNeoXModel instead of GptjModel.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from gptx_cli.config.spec import ModelConfig
from gptx_cli.errors import ConfigError

LORA_KEYS = ("r", "alpha", "dropout", "fan_in_fan_out", "merge_weights", "target_modules")
_BLOCK = ["TransformerDecoder", "ModuleList", "GPTJDecoderLayer"]
_ATTN = [*_BLOCK, "MultiheadAttention", "Linear"]
_FFN = [*_BLOCK, "FeedForwardNetwork", "ModuleList", "SingleFeedForwardLayer", "Linear"]
_OUTER = ["GptjModel", "GPTNeoXModel", "GPTJModel", "EmbeddingLayer", "Embedding"]
# Every class name in the chain of a ModelZoo GPT-J / GPT-NeoX module that LoRA can adapt.
MODULE_CLASSES = tuple(dict.fromkeys([*_OUTER, *_ATTN, *_FFN]))


@dataclass
class LoraParams:
    """ModelZoo's LoraConfig."""

    r: int = 0
    alpha: float = 1
    dropout: float = 0.0
    fan_in_fan_out: bool = False
    merge_weights: bool = False
    target_modules: list[str] | None = None

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def group_problems(d: Any) -> list[tuple[str | None, str]]:
    """What is wrong with one lora_params group: (its key or None for the group, message)."""
    if not isinstance(d, dict):
        return [(None, f"expected a mapping of {', '.join(LORA_KEYS)}")]
    unknown = sorted(set(d) - set(LORA_KEYS))
    if unknown:
        return [(None, f"unknown key '{unknown[0]}' (ModelZoo's LoraConfig has {', '.join(LORA_KEYS)})")]
    p = LoraParams(**d)
    out: list[tuple[str | None, str]] = []
    if not isinstance(p.r, int) or isinstance(p.r, bool) or p.r < 1:
        out.append(("r", f"must be a positive integer (got {p.r!r})"))
    if (
        not isinstance(p.alpha, (int, float))
        or isinstance(p.alpha, bool)
        or not math.isfinite(p.alpha)
        or p.alpha <= 0
    ):
        out.append(
            ("alpha", f"must be a finite number > 0 (got {p.alpha!r}); the adapters scale by alpha / r")
        )
    if isinstance(p.dropout, bool) or not isinstance(p.dropout, (int, float)) or not 0 <= p.dropout < 1:
        out.append(("dropout", f"must be in [0, 1) (got {p.dropout!r})"))
    if p.fan_in_fan_out:
        out.append(
            (
                "fan_in_fan_out",
                "true is for weights stored [in, out] (Conv1D); gptx's linear weights are [out, in], so it "
                "does not apply (ModelZoo cannot copy such weights either)",
            )
        )
    if p.target_modules is not None and (
        not isinstance(p.target_modules, list) or not all(isinstance(t, str) for t in p.target_modules)
    ):
        out.append(("target_modules", "must be a list of ModelZoo module class names"))
    else:
        bad = [t for t in p.target_modules or [] if t not in MODULE_CLASSES]
        if bad:
            out.append(
                (
                    "target_modules",
                    f"{bad[0]!r} is no module class of ModelZoo's GPT-J / GPT-NeoX, so this group would adapt "
                    f"nothing (classes: {', '.join(MODULE_CLASSES)})",
                )
            )
    return out


def groups_of(lora_params: Any) -> list[tuple[int | None, Any]]:
    """(index or None for a single dict, group) of a lora_params value (a dict or a list of dicts)."""
    if isinstance(lora_params, list):
        return list(enumerate(lora_params))
    return [(None, lora_params)]


def parse_lora_params(lora_params: Any, where: str = "Lora.lora_params") -> list[LoraParams]:
    groups = groups_of(lora_params)
    if not groups:
        raise ConfigError(f"{where}: empty list")
    for i, d in groups:
        for key, message in group_problems(d):
            at = where + (f"[{i}]" if i is not None else "") + (f".{key}" if key else "")
            raise ConfigError(f"{at}: {message}")
    return [LoraParams(**d) for _, d in groups]


def callbacks_of(raw: dict[str, Any]) -> list[Any]:
    trainer = raw.get("trainer", raw)
    init = trainer.get("init", {}) if isinstance(trainer, dict) else {}
    cbs = init.get("callbacks") or [] if isinstance(init, dict) else []
    return cbs if isinstance(cbs, list) else []


def lora_from_raw(raw: dict[str, Any], source: str | None = None) -> list[LoraParams] | None:
    """The Lora callback's parameter groups in a resolved trainer-layout dict, or None."""
    where = f"{source or 'config'}: trainer.init.callbacks"
    found = [cb["Lora"] for cb in callbacks_of(raw) if isinstance(cb, dict) and "Lora" in cb]
    if not found:
        return None
    if len(found) > 1:
        raise ConfigError(f"{where}: more than one Lora callback")
    body = found[0]
    if not isinstance(body, dict) or "lora_params" not in body or set(body) != {"lora_params"}:
        raise ConfigError(f"{where}: Lora takes one key, lora_params (a dict or a list of dicts)")
    return parse_lora_params(body["lora_params"], f"{where}: Lora.lora_params")


def add_lora_shortcut(raw: dict[str, Any], r: int | None, alpha: float | None) -> str | None:
    """--lora-r / --lora-alpha: add the Lora callback (all target modules) to the trainer-layout dict, or,
    beside a Lora callback of the config, set r / alpha of each of its groups, whose target_modules stay;
    returns the line that says so in that case."""
    trainer = raw.setdefault("trainer", {})
    init = trainer.setdefault("init", {})
    cbs = init.setdefault("callbacks", [])
    for cb in cbs:
        if isinstance(cb, dict) and "Lora" in cb:
            groups = cb["Lora"].get("lora_params")
            targets = []
            for g in groups if isinstance(groups, list) else [groups]:
                if r is not None:
                    g["r"] = r
                if alpha is not None:
                    g["alpha"] = alpha
                targets.append(g.get("target_modules") if isinstance(g, dict) else None)
            flags = " ".join(f"--lora-{k} {v}" for k, v in (("r", r), ("alpha", alpha)) if v is not None)
            shown = ", ".join("all" if t is None else str(t) for t in targets)
            return (
                f"{flags}: set in each group of the config's Lora callback; its target_modules stay ({shown})"
            )
    if r is None:
        raise ConfigError("--lora-alpha needs --lora-r (or a Lora callback in the config)")
    cbs.append({"Lora": {"lora_params": {"r": r, "alpha": alpha if alpha is not None else r}}})
    return None


def set_lora_callback(raw: dict[str, Any], groups: list[LoraParams]) -> None:
    """Write `groups` as the Lora callback of the trainer-layout dict (replacing one that is there)."""
    init = raw.setdefault("trainer", {}).setdefault("init", {})
    cbs = [cb for cb in init.get("callbacks") or [] if not (isinstance(cb, dict) and "Lora" in cb)]
    init["callbacks"] = [*cbs, {"Lora": {"lora_params": [g.to_dict() for g in groups]}}]


def describe(groups: list[LoraParams]) -> str:
    """One line: `r=8, alpha=16, dropout=0.0, target_modules=all` (groups joined by `; `)."""
    return "; ".join(
        f"r={g.r}, alpha={g.alpha:g}, dropout={g.dropout:g}, target_modules="
        + ("all" if g.target_modules is None else "[" + ", ".join(g.target_modules) + "]")
        + (", merge_weights=true" if g.merge_weights else "")
        for g in groups
    )


def modelzoo_chain(name: str, cfg: ModelConfig) -> list[str] | None:
    """The ModelZoo class chain of a gptx module name (None: not a Linear / Embedding)."""
    outer = ["GPTNeoXModel" if cfg.use_untied_layer_norm else "GptjModel", "GPTJModel"]
    if name == "embed":
        return [*outer, "EmbeddingLayer", "Embedding"]
    if name == "lm_head":
        return None if cfg.share_embedding_weights else [*outer, "Linear"]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "layers":
        if parts[2] == "attn" and parts[3] in ("qkv", "out"):
            return [*outer, *_ATTN]
        if parts[2] == "mlp" and parts[3] in ("fc_in", "fc_out"):
            return [*outer, *_FFN]
    return None


def target_names(cfg: ModelConfig) -> list[str]:
    names = ["embed"]
    for i in range(cfg.num_hidden_layers):
        names += [
            f"layers.{i}.attn.qkv",
            f"layers.{i}.attn.out",
            f"layers.{i}.mlp.fc_in",
            f"layers.{i}.mlp.fc_out",
        ]
    return [*names, "lm_head"]


def group_for(chain: list[str], groups: list[LoraParams]) -> LoraParams | None:
    """ModelZoo's get_lora_config_for_module."""
    for g in groups:
        if g.target_modules is None or all(t in chain for t in g.target_modules):
            return g
    return None


def plan(cfg: ModelConfig, groups: list[LoraParams]) -> dict[str, LoraParams]:
    """gptx module name -> its LoRA group; a plan that adapts nothing is a ConfigError (as ModelZoo)."""
    out = {}
    for name in target_names(cfg):
        chain = modelzoo_chain(name, cfg)
        g = group_for(chain, groups) if chain is not None else None
        if g is not None:
            out[name] = g
    if not out:
        targets = sorted({t for g in groups for t in (g.target_modules or [])})
        raise ConfigError(
            f"Lora: no modules were converted to LoRA (target_modules {targets} match no module)",
            hint="ModelZoo class names: MultiheadAttention, FeedForwardNetwork, GPTJDecoderLayer, Linear, Embedding, ...",
        )
    return out


def adapter_shapes(name: str, cfg: ModelConfig, r: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(lora_A shape, lora_B shape) of a module; q, k and v of `qkv` have one adapter each (stacked)."""
    h, f, v = cfg.hidden_size, cfg.filter_size, cfg.vocab_size
    if name == "embed":
        return (r, v), (h, r)
    if name == "lm_head":
        return (r, h), (v, r)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "qkv":
        return (3 * r, h), (3 * h, r)
    if leaf == "out":
        return (r, h), (h, r)
    if leaf == "fc_in":
        return (r, h), (f, r)
    return (r, f), (h, r)


def trainable_parameters(cfg: ModelConfig, groups: list[LoraParams] | None) -> int | None:
    """Adapter parameters of a LoRA run (None without LoRA)."""
    if not groups:
        return None
    total = 0
    for name, g in plan(cfg, groups).items():
        a, b = adapter_shapes(name, cfg, g.r)
        total += a[0] * a[1] + b[0] * b[1]
    return total
