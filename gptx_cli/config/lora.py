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

from dataclasses import asdict, dataclass
from typing import Any

from gptx_cli.config.spec import ModelConfig
from gptx_cli.errors import ConfigError

LORA_KEYS = ("r", "alpha", "dropout", "fan_in_fan_out", "merge_weights", "target_modules")
_BLOCK = ["TransformerDecoder", "ModuleList", "GPTJDecoderLayer"]
_ATTN = [*_BLOCK, "MultiheadAttention", "Linear"]
_FFN = [*_BLOCK, "FeedForwardNetwork", "ModuleList", "SingleFeedForwardLayer", "Linear"]


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


def _params(d: Any, where: str) -> LoraParams:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(LORA_KEYS)}")
    unknown = sorted(set(d) - set(LORA_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key '{unknown[0]}' (ModelZoo's LoraConfig has {', '.join(LORA_KEYS)})"
        )
    p = LoraParams(**d)
    if not isinstance(p.r, int) or isinstance(p.r, bool) or p.r < 1:
        raise ConfigError(f"{where}.r: must be a positive integer (got {p.r!r})")
    if not isinstance(p.alpha, (int, float)) or isinstance(p.alpha, bool):
        raise ConfigError(f"{where}.alpha: must be a number (got {p.alpha!r})")
    if not isinstance(p.dropout, (int, float)) or not 0 <= p.dropout < 1:
        raise ConfigError(f"{where}.dropout: must be in [0, 1) (got {p.dropout!r})")
    if p.fan_in_fan_out:
        raise ConfigError(
            f"{where}.fan_in_fan_out: true is for weights stored [in, out] (Conv1D); gptx's linear weights "
            "are [out, in], so it does not apply (ModelZoo cannot copy such weights either)"
        )
    if p.target_modules is not None and (
        not isinstance(p.target_modules, list) or not all(isinstance(t, str) for t in p.target_modules)
    ):
        raise ConfigError(f"{where}.target_modules: must be a list of ModelZoo module class names")
    return p


def parse_lora_params(lora_params: Any, where: str = "Lora.lora_params") -> list[LoraParams]:
    items = lora_params if isinstance(lora_params, list) else [lora_params]
    if not items:
        raise ConfigError(f"{where}: empty list")
    return [
        _params(d, f"{where}[{i}]" if isinstance(lora_params, list) else where) for i, d in enumerate(items)
    ]


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


def add_lora_shortcut(raw: dict[str, Any], r: int | None, alpha: float | None) -> None:
    """--lora-r / --lora-alpha: add (or update) the Lora callback in the trainer-layout dict."""
    trainer = raw.setdefault("trainer", {})
    init = trainer.setdefault("init", {})
    cbs = init.setdefault("callbacks", [])
    for cb in cbs:
        if isinstance(cb, dict) and "Lora" in cb:
            groups = cb["Lora"].get("lora_params")
            for g in groups if isinstance(groups, list) else [groups]:
                if r is not None:
                    g["r"] = r
                if alpha is not None:
                    g["alpha"] = alpha
            return
    if r is None:
        raise ConfigError("--lora-alpha needs --lora-r (or a Lora callback in the config)")
    cbs.append({"Lora": {"lora_params": {"r": r, "alpha": alpha if alpha is not None else r}}})


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
