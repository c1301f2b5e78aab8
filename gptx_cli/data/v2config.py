"""ModelZoo "v2" preprocessing YAML (sections `setup`, `processing`, `dataset`) -> PreprocessOptions fields.

Only the keys gptx acts on are mapped; ModelZoo keys with no effect here are accepted and reported.
A key in the wrong section, or an unknown key, is a ConfigError naming the file, section and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gptx_cli.errors import ConfigError

SECTION_KEYS: dict[str, set[str]] = {
    "setup": {
        "data", "output_dir", "processes", "num_processes", "mode", "input_dir", "image_dir", "data_splits",
        "data_splits_dir",
    },
    "processing": {
        "huggingface_tokenizer", "custom_tokenizer", "tokenizer", "tokenizer_params", "max_seq_length",
        "pack_sequences", "min_sequence_len", "seed", "files_per_record", "resume_from_checkpoint",
        "read_hook", "read_hook_kwargs", "eos_id", "pad_id", "write_in_batch", "display_pbar", "output_name",
        "short_seq_prob", "use_ftfy", "ftfy_normalizer", "wikitext_detokenize", "input_ids_dtype",
        "input_mask_dtype", "inverted_mask", "shuffle", "shuffle_seed", "fraction_of_RAM_alloted",
        "split_text_to_tokenize", "chunk_len_to_split", "remove_bos_in_chunks", "sep_token", "jsonl_key",
        "UNSAFE_skip_jsonl_decoding_errors", "read_chunk_size", "split_seed", "end_of_turn_token",
    },
    "dataset": {"use_vsl", "text_key", "fold_long_doc", "sep_token", "truncate_to_msl", "chat_template"},
}  # fmt: skip
IGNORED = {
    "mode", "read_hook", "write_in_batch", "output_name", "short_seq_prob", "use_ftfy", "ftfy_normalizer",
    "wikitext_detokenize", "input_ids_dtype", "input_mask_dtype", "inverted_mask", "shuffle", "shuffle_seed",
    "fraction_of_RAM_alloted", "split_text_to_tokenize", "chunk_len_to_split", "remove_bos_in_chunks",
    "sep_token", "tokenizer_params", "image_dir", "data_splits", "data_splits_dir",
    "UNSAFE_skip_jsonl_decoding_errors", "read_chunk_size", "split_seed", "end_of_turn_token", "truncate_to_msl",
    "chat_template",
}  # fmt: skip


def load_v2_config(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """(PreprocessOptions field values, notes about ignored keys)."""
    import yaml

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{p}: cannot read preprocessing config ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected sections setup / processing / dataset at the top level")
    owner = {k: s for s, keys in SECTION_KEYS.items() for k in keys}
    for section, body in raw.items():
        if section not in SECTION_KEYS:
            raise ConfigError(f"{p}: unknown section '{section}' (expected setup, processing, dataset)")
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{p}: section '{section}' must be a mapping")
        for key in body:
            if key in SECTION_KEYS[section]:
                continue
            if key in owner:
                raise ConfigError(f"{p}: key '{key}' belongs in section '{owner[key]}', not '{section}'")
            raise ConfigError(f"{p}: unknown key '{key}' in section '{section}'")
    setup, proc, ds = (raw.get(s) or {} for s in ("setup", "processing", "dataset"))
    out: dict[str, Any] = {}
    notes = [f"{p}: '{k}' has no effect in gptx" for s in (setup, proc, ds) for k in s if k in IGNORED]
    data = setup.get("data") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: setup.data must be a mapping with 'source' (and 'type', 'split')")
    source = data.get("source") or setup.get("input_dir")
    if source:
        out["inputs"] = [str(source)] if not isinstance(source, list) else [str(s) for s in source]
    if data.get("split"):
        out["split"] = str(data["split"])
    if setup.get("output_dir"):
        out["output_dir"] = str(setup["output_dir"])
    procs = setup.get("processes", setup.get("num_processes"))
    if procs:
        out["processes"] = int(procs)
    tok = proc.get("huggingface_tokenizer") or proc.get("custom_tokenizer") or proc.get("tokenizer")
    if tok:
        out["tokenizer"] = str(tok)
    for key in ("max_seq_length", "min_sequence_len", "seed"):
        if key in proc:
            out[key] = int(proc[key])
    if "pack_sequences" in proc:
        out["pack_sequences"] = bool(proc["pack_sequences"])
    if "files_per_record" in proc:
        out["samples_per_file"] = int(proc["files_per_record"])
    if proc.get("resume_from_checkpoint"):
        out["resume"] = True
    if "display_pbar" in proc:
        out["progress"] = bool(proc["display_pbar"])
    hook = proc.get("read_hook_kwargs") or {}
    text_key = (
        ds.get("text_key")
        or proc.get("jsonl_key")
        or hook.get("text_key")
        or (hook.get("data_keys") or {}).get("text_key")
    )
    if text_key:
        out["text_key"] = str(text_key)
    # VSL pretraining samples (gptx_cli.data.vsl); finetuning reads use_vsl itself (data.finetune).
    for key in ("use_vsl", "fold_long_doc") if setup.get("mode") != "finetuning" else ():
        if key in ds:
            if not isinstance(ds[key], bool):
                raise ConfigError(f"{p}: dataset.{key} must be true or false, got {ds[key]!r}")
            out[key] = ds[key]
    if setup.get("mode") == "finetuning":  # gptx_cli.data.finetune acts on the finetuning keys
        from gptx_cli.data.finetune import v2_finetuning

        if "fold_long_doc" in ds:
            notes.append(f"{p}: 'fold_long_doc' has no effect in gptx in finetuning mode")

        notes = v2_finetuning(out, notes, setup, proc, ds, str(p))
    return out, notes
