"""muP coordinate check: activation sizes after a few AdamW steps, across widths, muP vs standard.

Under muP (hidden_size / mup_base_hidden_size scaling of init, LR and output logits) the mean |x| of
each activation stays roughly flat as the model widens; under the standard parametrisation (same
initializer and LR at every width) the logits and block outputs grow with width. The tables name the muP
initialisation rule in force: this check's config gives its initializers, which ModelZoo's GPT-J leaves
unscaled (model.init.resolved_initializers) and `mup_scale_all_initializers: true` scales.

    python -m gptx_cli.model.coord_check [--widths 32 64 128 256] [--steps 4] [--lr 0.01]
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import torch

from gptx_cli.config.spec import ModelConfig
from gptx_cli.model.init import init_model, optimizer_param_groups
from gptx_cli.model.loss import lm_loss

BASE_WIDTH = 32
# (title, muP, mup_scale_all_initializers): the config gives its initializers, so the two muP init rules differ
RULES = (
    ("muP, mup_scale_all_initializers: true (every initializer scaled, as ModelZoo's GPT-2)", True, True),
    ("muP, ModelZoo GPT-J's rule (the initializers the config gives are not scaled)", True, False),
    ("standard parametrisation", False, False),
)


def _config(width: int, mup: bool, scale_all_initializers: bool = True) -> ModelConfig:
    init = {"name": "normal", "mean": 0.0, "std": 0.5 / BASE_WIDTH**0.5}
    cfg = ModelConfig(
        name="gptj",
        vocab_size=256,
        hidden_size=width,
        num_hidden_layers=2,
        num_heads=4,
        filter_size=4 * width,
        max_position_embeddings=64,
        rotary_dim=4,
        use_ffn_bias=True,
        use_projection_bias_in_attention=False,
        use_ffn_bias_in_attention=False,
        share_embedding_weights=False,
        embedding_dropout_rate=0.0,
        attention_dropout_rate=0.0,
        residual_dropout_rate=0.0,
        embedding_initializer={"name": "normal", "mean": 0.0, "std": 1.0},
        initializer=dict(init),
        output_layer_initializer=dict(init),
    )
    if mup:
        cfg = dataclasses.replace(
            cfg,
            mup_base_hidden_size=BASE_WIDTH,
            mup_base_filter_size=4 * BASE_WIDTH,
            scale_qk_dot_by_d=True,
            mup_scale_all_initializers=scale_all_initializers,
        )
    return cfg


def _recorder(sizes: dict[str, float], key: str) -> Any:
    def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        sizes[key] = output.abs().mean().item()

    return hook


def coord_check(
    widths: tuple[int, ...] = (32, 64, 128, 256),
    *,
    mup: bool = True,
    scale_all_initializers: bool = True,
    steps: int = 4,
    lr: float = 1e-2,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per width: mean |activation| of the embedding, each block output and the logits."""
    data = torch.randint(0, 256, (4, 33), generator=torch.Generator().manual_seed(seed))
    rows = []
    for width in widths:
        cfg = _config(width, mup, scale_all_initializers)
        model = init_model(cfg, seed=seed)
        groups = optimizer_param_groups(model, cfg)
        opt = torch.optim.AdamW(
            [{"params": g["params"], "lr": lr * g["lr_scale"], "weight_decay": 0.0} for g in groups], lr=lr
        )
        for _ in range(steps):
            out = lm_loss(model, data[:, :-1], data[:, 1:], torch.ones_like(data[:, 1:]))
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        sizes: dict[str, float] = {}
        hooks = [model.embed.register_forward_hook(_recorder(sizes, "embed"))]
        hooks += [
            layer.register_forward_hook(_recorder(sizes, f"block{k}")) for k, layer in enumerate(model.layers)
        ]
        with torch.no_grad():
            sizes["logits"] = model(data[:, :-1]).abs().mean().item()
        for h in hooks:
            h.remove()
        rows.append({"width": width, **sizes})
    return rows


def format_table(rows: list[dict[str, Any]], title: str) -> str:
    keys = [k for k in rows[0] if k != "width"]
    lines = [title, "| width | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
    for r in rows:
        lines.append(f"| {r['width']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="muP coordinate check (mean |activation| vs width)")
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-2)
    args = ap.parse_args(argv)
    for title, mup, scale_all in RULES:
        rows = coord_check(
            tuple(args.widths), mup=mup, scale_all_initializers=scale_all, steps=args.steps, lr=args.lr
        )
        print(format_table(rows, title))
        print()


if __name__ == "__main__":
    main()
