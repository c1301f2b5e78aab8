"""The tokenizer of a Hugging Face export: `tokenizer.json` plus the config files transformers reads, so
`AutoTokenizer.from_pretrained(export)` encodes exactly as gptx does.

The tokenizer is the one the gptx checkpoint records in gptx.json (a copied `tokenizer.json`, a path, or
a preset name such as gpt2 / neox-20b, found through GPTX_TOKENIZER_DIR). Its `tokenizers` engine is
saved as is; `tokenizer_config.json` names PreTrainedTokenizerFast (the class that uses tokenizer.json
unchanged) and the end-of-text / padding tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gptx_cli.checkpoint import CONFIG_FILE
from gptx_cli.data.params import tokenizer_of, trained_on
from gptx_cli.errors import GptxError

HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def recorded_tokenizer(source: Path, meta: dict[str, Any]) -> str | None:
    """The tokenizer a gptx checkpoint records (a file in the checkpoint wins), else the one recorded for
    the data its config.yaml names (`data.params`: a checkpoint written before the Pile's part
    directories were read, or by hand), or None."""
    recorded = meta.get("tokenizer")
    if not recorded:
        return tokenizer_of(trained_on(source / CONFIG_FILE))
    inside = source / str(recorded)
    return str(inside) if inside.is_file() else str(recorded)


def write_hf_tokenizer(out_dir: Path, spec: str, model_max_length: int) -> int | None:
    """Write the tokenizer files into `out_dir`; returns its end-of-text id. GptxError if it cannot be
    loaded."""
    from gptx_cli.data.tokenizer import load_tokenizer

    tok = load_tokenizer(spec)
    tok.hf.save(str(out_dir / "tokenizer.json"))
    eos = tok.hf.id_to_token(tok.eos_id) if tok.eos_id is not None else None
    pad = tok.hf.id_to_token(tok.pad_id) if tok.pad_id is not None else None
    special = {
        k: v for k, v in (("bos_token", eos), ("eos_token", eos), ("unk_token", eos), ("pad_token", pad)) if v
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(model_max_length),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        **special,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2, sort_keys=True) + "\n")
    return tok.eos_id


def export_tokenizer(
    out_dir: Path, source: Path, meta: dict[str, Any], model_max_length: int
) -> tuple[int | None, str | None]:
    """Export the checkpoint's tokenizer: (its end-of-text id, None), or (None, a warning) when there is
    none to export (never silent)."""
    spec = recorded_tokenizer(source, meta)
    if spec is None:
        return None, f"{source} records no tokenizer: the export has none (AutoTokenizer will not load it)"
    try:
        return write_hf_tokenizer(out_dir, spec, model_max_length), None
    except GptxError as err:
        return None, f"the export has no tokenizer: {err}"
