"""ModelZoo "v2" preprocessing YAML (`setup`, `processing`, `dataset`) -> a `V2Plan` gptx runs.

ModelZoo's shipped configs (data_preparation/data_preprocessing/configs/*.yaml) run after only their
paths and tokenizer are edited. Every key gptx accepts is in `V2_KEYS` with what gptx does with it:

- `acted`: implemented with ModelZoo's meaning (data_preprocessor.py, pretraining_token_generator.py,
  data_split.py, hooks.py, utils.py);
- `quiet`: changes nothing in the output (e.g. `write_in_batch`, `fraction_of_RAM_alloted`): accepted
  without a word;
- `warn`: accepted for ModelZoo compatibility, has no effect in gptx: a warning names file:line:col,
  the key and why;
- `checked`: accepted at ModelZoo's default (which is what gptx does); any other value is a one-line
  error naming the key and its line (multimodal, DPO, VSL, MLM and custom modes gptx cannot run);
- `finetuning`: read by the finetuning mode (gptx_cli/data/finetune.py); a warning in other modes.

A key in a section ModelZoo does not read it from, or an unknown key, is an error with file:line:col
and a did-you-mean. tests/data/test_v2config.py walks `V2_KEYS`: a key added without one of these
fails it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptx_cli.config.load import YamlDoc
from gptx_cli.data.textclean import FINETUNING_HOOKS, NLG_HOOKS, TEXT_HOOKS, UNSUPPORTED_HOOKS, TextCleaning
from gptx_cli.data.tokenizer import gpt2_pair_spec

ACTED, QUIET, WARN, CHECKED, FINETUNING = "acted", "quiet", "warn", "checked", "finetuning"
NO_EFFECT = "accepted for ModelZoo compatibility; has no effect in gptx"
MODES = ("pretraining", "nlg", "finetuning")
UNSUPPORTED_MODES = {
    "dpo": "DPO preference data",
    "custom": "custom token generators",
    "embedding_training": "embedding models",
    "embedding_generation": "embedding models",
}


@dataclass(frozen=True)
class Key:
    sections: tuple[str, ...]
    status: str
    why: str = ""  # warn: why it has no effect; checked: what gptx cannot run
    default: Any = None  # checked: the one accepted value


_S, _P, _D = ("setup",), ("processing",), ("dataset",)
_PD = ("processing", "dataset")
V2_KEYS: dict[str, Key] = {
    # setup
    "data": Key(_S, ACTED),
    "output_dir": Key(_S, ACTED),
    "input_dir": Key(_S, ACTED),  # gptx's older spelling of data.source
    "processes": Key(_S, ACTED),
    "num_processes": Key(_S, ACTED),
    "mode": Key(_S, ACTED),
    "metadata_files": Key(_S, ACTED),
    "data_splits": Key(_S, ACTED),
    "data_splits_dir": Key(_S, ACTED),
    "context_splits": Key(_S, ACTED),
    "image_dir": Key(_S, CHECKED, "multimodal data", None),
    "token_generator": Key(_S, CHECKED, "custom token generators", None),
    "num_nodes": Key(_S, CHECKED, "multi-node preprocessing", 1),
    "rank": Key(_S, CHECKED, "multi-node preprocessing", 0),
    "slurm": Key(_S, CHECKED, "multi-node preprocessing", None),
    # processing
    "huggingface_tokenizer": Key(_P, ACTED),
    "custom_tokenizer": Key(_P, ACTED),
    "tokenizer": Key(_P, ACTED),
    "tokenizer_params": Key(_P, ACTED),
    "max_seq_length": Key(_P, ACTED),
    "min_sequence_len": Key(_P, ACTED),
    "seed": Key(_P, ACTED),
    "short_seq_prob": Key(_P, ACTED),
    "files_per_record": Key(_P, ACTED),
    "resume_from_checkpoint": Key(_P, ACTED),
    "read_hook": Key(_P, ACTED),
    "read_hook_kwargs": Key(_P, ACTED),
    "eos_id": Key(_P, ACTED),
    "pad_id": Key(_P, ACTED),
    "use_ftfy": Key(_P, ACTED),
    "ftfy_normalizer": Key(_P, ACTED),
    "wikitext_detokenize": Key(_P, ACTED),
    "shuffle": Key(_P, ACTED),
    "shuffle_seed": Key(_P, ACTED),
    "split_seed": Key(_P, ACTED),
    "UNSAFE_skip_jsonl_decoding_errors": Key(_P, ACTED),
    "display_pbar": Key(_P, ACTED),
    "jsonl_key": Key(_P, ACTED),
    "write_in_batch": Key(_P, QUIET),
    "fraction_of_RAM_alloted": Key(_P, QUIET),
    "read_chunk_size": Key(_P, ACTED),  # pretraining: records cut into documents (textclean.py)
    "write_chunk_size": Key(
        _P, WARN, "gptx cuts output files every files_per_record samples, not every write_chunk_size KiB"
    ),
    "output_name": Key(_P, WARN, "gptx names its output files data-<unit>-<k>.h5"),
    "input_ids_dtype": Key(_P, CHECKED, "input_ids other than int32", "int32"),
    "input_mask_dtype": Key(_P, CHECKED, "masks other than int32", "int32"),
    "inverted_mask": Key(_P, CHECKED, "inverted masks", False),
    "token_limit": Key(_P, CHECKED, "a token limit", None),
    "semantic_loss_weight": Key(_P, CHECKED, "semantic region weights", None),
    "semantic_drop_mask": Key(_P, CHECKED, "semantic region dropping", None),
    "semantic_attention_mask": Key(_P, CHECKED, "semantic attention masks", None),
    # gptx's own keys (docs/modelzoo-differences.md): the corrected rule where ModelZoo's differs
    "gptx_keep_whole_documents": Key(_P, ACTED),  # no read_chunk_size cut
    "gptx_keep_whole_last_character": Key(_P, ACTED),  # not ModelZoo's find_token_range end
    # dataset (gptx also reads pack_sequences and the split_text_* keys from processing)
    "pack_sequences": Key(_PD, ACTED),
    "text_key": Key(_D, ACTED),
    "split_text_to_tokenize": Key(_PD, CHECKED, "split_text_to_tokenize", False),
    "chunk_len_to_split": Key(
        _PD, WARN, "it is read only with split_text_to_tokenize, which gptx does not run"
    ),
    "remove_bos_in_chunks": Key(
        _PD, WARN, "it is read only with split_text_to_tokenize, which gptx does not run"
    ),
    "use_vsl": Key(_D, ACTED),  # pretraining and finetuning: gptx_cli.data.vsl; nlg refuses true
    "fold_long_doc": Key(
        _D,
        WARN,
        "ModelZoo 2.10's VSL token generator reads it and never uses it: a document longer than "
        "max_seq_length is always cut into pieces of max_seq_length + 1 tokens",
    ),
    "training_objective": Key(_D, CHECKED, "MLM / FIM / BERT objectives", None),
    "is_multimodal": Key(_D, CHECKED, "multimodal data", False),
    "image_token": Key(_D, CHECKED, "multimodal data", None),
    "max_num_img": Key(_D, CHECKED, "multimodal data", None),
    "num_patches": Key(_D, CHECKED, "multimodal data", None),
    "register_special_image_token": Key(_D, CHECKED, "multimodal data", None),
    "use_single_image_token": Key(_D, CHECKED, "multimodal data", None),
    "sep_token": Key(_D, FINETUNING),
    "truncate_to_msl": Key(_D, FINETUNING),
    "chat_template": Key(_D, FINETUNING),
    "end_of_turn_token": Key(_PD, FINETUNING),
}
SECTIONS = ("setup", "processing", "dataset")
# gptx preprocess flags that are ModelZoo preprocess_data arguments of the same name and meaning, and
# the section its update_params puts them in
CLI_SECTIONS = {
    "output_dir": "setup",
    "processes": "setup",
    "max_seq_length": "processing",
    "min_sequence_len": "processing",
    "seed": "processing",
    "pack_sequences": "dataset",
    "use_vsl": "dataset",
}
DATA_KEYS = {"source", "type", "split"}


@dataclass
class V2Warning:
    """A key accepted with no effect, where it was written."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def format(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: warning: {self.path}: {self.message}"


@dataclass
class V2Plan:
    """What a v2 YAML asks for: the PreprocessOptions fields, the mode, the hook, the splits."""

    file: str
    doc: YamlDoc
    mode: str = "pretraining"
    hook: str = "text_read_hook"
    hook_kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    data_splits: dict[str, Any] | None = None
    context_splits: dict[str, Any] | None = None
    data_splits_dir: str | None = None
    split_seed: int = 0
    truncate_to_msl: dict[str, Any] | None = None  # finetuning: dataset.truncate_to_msl, checked
    warnings: list[V2Warning] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # the YAML as written (for the finetuning mode)


def _did_you_mean(word: str, candidates: Any) -> str:
    from gptx_cli.config.schemas import did_you_mean

    return did_you_mean(word, candidates)


def _check_sections(doc: YamlDoc, plan: V2Plan) -> None:
    raw = doc.data
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise doc.error((), "expected sections setup / processing / dataset at the top level")
    for section, body in raw.items():
        if section not in SECTIONS:
            raise doc.error(
                (section,),
                f"unknown section '{section}' (expected setup, processing, dataset)"
                f"{_did_you_mean(section, SECTIONS)}",
            )
        if body is None:
            continue
        if not isinstance(body, dict):
            raise doc.error((section,), f"section '{section}' must be a mapping")
        for key, value in body.items():
            rule = V2_KEYS.get(key)
            path = (section, key)
            if rule is None:
                raise doc.error(
                    path, f"unknown key '{key}' in section '{section}'{_did_you_mean(key, V2_KEYS)}"
                )
            if section not in rule.sections:
                raise doc.error(path, f"key '{key}' belongs in section '{rule.sections[0]}', not '{section}'")
            if rule.status == CHECKED and not _is_default(value, rule.default):
                raise doc.error(path, f"{key}: {value!r} is not supported by gptx ({rule.why} cannot be run)")
            if rule.status == WARN:
                line, col = doc.where(path)
                plan.warnings.append(
                    V2Warning(doc.file, line, col, f"{section}.{key}", f"{NO_EFFECT}: {rule.why}")
                )


def _is_default(value: Any, default: Any) -> bool:
    if value == default:
        return True
    return value in (None, {}, [], False) and default in (None, False)


def _get(doc: YamlDoc, section: str) -> dict[str, Any]:
    body = (doc.data or {}).get(section) if isinstance(doc.data, dict) else None
    return body if isinstance(body, dict) else {}


def _typed(doc: YamlDoc, path: tuple[Any, ...], value: Any, kind: type, what: str) -> Any:
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise doc.error(path, f"expected {what}, got {value!r}")
    return value


def load_v2_config(path: str | Path) -> V2Plan:
    """Read and check a v2 YAML (duplicate keys, sections, values) into a V2Plan; ConfigError on problems."""
    from gptx_cli.config.load import load_yaml

    doc = load_yaml(path)
    plan = V2Plan(str(path), doc, raw=doc.data if isinstance(doc.data, dict) else {})
    _check_sections(doc, plan)
    setup, proc, ds = (_get(doc, s) for s in SECTIONS)
    out = plan.options
    base = Path(path).parent

    # --- setup
    mode = setup.get("mode", "pretraining")
    if mode in UNSUPPORTED_MODES:
        raise doc.error(
            ("setup", "mode"), f"mode '{mode}' is not supported by gptx ({UNSUPPORTED_MODES[mode]})"
        )
    if mode not in MODES:
        raise doc.error(
            ("setup", "mode"),
            f"unknown mode {mode!r} (gptx runs {', '.join(MODES)}){_did_you_mean(mode, MODES)}",
        )
    plan.mode = mode
    data = setup.get("data") or {}
    if not isinstance(data, dict):
        raise doc.error(("setup", "data"), "expected a mapping with 'source' and 'type'")
    for key in data:
        if key not in DATA_KEYS:
            raise doc.error(
                ("setup", "data", key),
                f"unknown key '{key}' in setup.data (gptx reads source, type, split){_did_you_mean(key, DATA_KEYS)}",
            )
    kind = data.get("type", "local")
    if kind not in ("local", "huggingface"):
        raise doc.error(("setup", "data", "type"), f"type must be 'local' or 'huggingface', got {kind!r}")
    source = data.get("source", setup.get("input_dir"))
    if source is not None:
        sources = source if isinstance(source, list) else [source]
        out["inputs"] = [str(s) for s in sources]
    if data.get("split") is not None:
        out["split"] = str(data["split"])
    if setup.get("metadata_files"):
        out["inputs"] = _metadata_inputs(doc, str(setup["metadata_files"]))
    if setup.get("output_dir") is not None:
        out["output_dir"] = str(setup["output_dir"])
    procs = setup.get("processes", setup.get("num_processes"))
    if procs is not None:
        out["processes"] = _typed(doc, ("setup", "processes"), procs, int, "an integer")
    plan.data_splits = setup.get("data_splits")
    plan.context_splits = setup.get("context_splits")
    if setup.get("data_splits_dir") is not None:
        plan.data_splits_dir = str(setup["data_splits_dir"])
    plan.split_seed = _typed(doc, ("processing", "split_seed"), proc.get("split_seed", 0), int, "an integer")

    # --- processing: tokenizer
    _tokenizer(doc, proc, out, base)
    for key in ("max_seq_length", "min_sequence_len", "seed"):
        if key in proc:
            out[key] = _typed(doc, ("processing", key), proc[key], int, "an integer")
    if "short_seq_prob" in proc:
        p = _typed(doc, ("processing", "short_seq_prob"), proc["short_seq_prob"], float, "a number")
        if not 0.0 <= p <= 1.0:
            raise doc.error(("processing", "short_seq_prob"), f"must be in [0, 1], got {p}")
        out["short_seq_prob"] = p
    for key in ("eos_id", "pad_id"):
        if proc.get(key) is not None:
            _typed(doc, ("processing", key), proc[key], int, "a token id")
    for section, body in (("dataset", ds), ("processing", proc)):
        if "pack_sequences" in body:
            out["pack_sequences"] = _typed(
                doc, (section, "pack_sequences"), body["pack_sequences"], bool, "true/false"
            )
    if "files_per_record" in proc:
        out["samples_per_file"] = _typed(
            doc, ("processing", "files_per_record"), proc["files_per_record"], int, "an integer"
        )
    if proc.get("resume_from_checkpoint"):
        out["resume"] = True
    if "display_pbar" in proc:
        out["progress"] = bool(proc["display_pbar"])
    if "shuffle" in proc:
        out["shuffle"] = _typed(doc, ("processing", "shuffle"), proc["shuffle"], bool, "true/false")
    if "shuffle_seed" in proc:
        out["shuffle_seed"] = _typed(
            doc, ("processing", "shuffle_seed"), proc["shuffle_seed"], int, "an integer"
        )
    if "UNSAFE_skip_jsonl_decoding_errors" in proc:
        skip = _typed(
            doc, ("processing", "UNSAFE_skip_jsonl_decoding_errors"), proc["UNSAFE_skip_jsonl_decoding_errors"],
            bool, "true/false",
        )  # fmt: skip
        out["strict"] = not skip  # ModelZoo fails on an undecodable JSON line unless told to skip it

    # --- read hook and text clean-up
    _read_hook(doc, plan, proc)
    normalizer = proc.get("ftfy_normalizer", "NFC")
    if normalizer not in ("NFC", "NFKC", "NFD", "NFKD", None):
        raise doc.error(
            ("processing", "ftfy_normalizer"), f"expected NFC, NFKC, NFD, NFKD or null, got {normalizer!r}"
        )
    # ModelZoo's token generators default use_ftfy to true (PretrainingTokenGenerator, FinetuningTokenGenerator).
    use_ftfy = _typed(doc, ("processing", "use_ftfy"), proc.get("use_ftfy", True), bool, "true/false")
    wikitext = _typed(
        doc, ("processing", "wikitext_detokenize"), proc.get("wikitext_detokenize", False), bool, "true/false"
    )
    out["cleaning"] = TextCleaning(
        strip=plan.hook in TEXT_HOOKS,
        use_ftfy=use_ftfy,
        ftfy_normalizer=normalizer,
        wikitext_detokenize=wikitext,
        lines=True,  # ModelZoo's v2 reader reads .txt files line by line (datasets' text builder)
    )
    if plan.mode == "pretraining":
        out["packing"] = "modelzoo-v2"  # PretrainingTokenGenerator's chunks and EOS rule (data/pack.py)
    text_key = ds.get("text_key") or proc.get("jsonl_key") or plan.hook_kwargs.get("text_key")
    nested = plan.hook_kwargs.get("data_keys")
    if not text_key and isinstance(nested, dict):
        text_key = nested.get("text_key")
    if text_key:
        out["text_key"] = str(text_key)

    # --- VSL (gptx_cli.data.vsl): ModelZoo's [n, 5, msl] pretraining and finetuning samples
    if ds.get("use_vsl") is not None:
        value = _typed(doc, ("dataset", "use_vsl"), ds["use_vsl"], bool, "true/false")
        if value and plan.mode not in ("pretraining", "finetuning"):
            raise doc.error(
                ("dataset", "use_vsl"),
                f"use_vsl: true is not supported by gptx in {plan.mode} mode (VSL pretraining and finetuning only)",
            )
        out["use_vsl"] = value
    for section, body in (("dataset", ds), ("processing", proc)):
        if plan.mode == "finetuning" and "pack_sequences" in body:
            line, col = doc.where((section, "pack_sequences"))
            plan.warnings.append(
                V2Warning(
                    doc.file, line, col, f"{section}.pack_sequences",
                    f"{NO_EFFECT}: ModelZoo's finetuning token generators do not read it (use_vsl packs examples)",
                )
            )  # fmt: skip

    _read_chunk_size(doc, plan, proc)
    if "gptx_keep_whole_last_character" in proc:
        out["keep_whole_last_character"] = _typed(
            doc, ("processing", "gptx_keep_whole_last_character"), proc["gptx_keep_whole_last_character"],
            bool, "true/false",
        )  # fmt: skip
        if plan.mode == "nlg":
            _no_effect(
                doc, plan, ("processing", "gptx_keep_whole_last_character"), "nlg records are token ids"
            )
    if plan.mode == "finetuning" and ds.get("truncate_to_msl") is not None:
        plan.truncate_to_msl = _truncate_to_msl(doc, plan, ds["truncate_to_msl"])

    _mode_keys(doc, plan, setup, proc, ds)

    # --- keys that only the finetuning mode reads
    if plan.mode != "finetuning":
        for key, value in ds.items():
            if V2_KEYS[key].status == FINETUNING and value is not None:
                line, col = doc.where(("dataset", key))
                plan.warnings.append(
                    V2Warning(
                        doc.file, line, col, f"dataset.{key}",
                        f"{NO_EFFECT}: ModelZoo reads it in finetuning mode, this config's mode is {plan.mode}",
                    )
                )  # fmt: skip
    return plan


READ_CHUNK_SIZE_KIB = 1024  # data_preprocessor.py: processing_params.pop("read_chunk_size", 1024) * 1024
TRUNCATE_KEYS = ("max_turn_length", "prompt_truncation_mode")
TRUNCATION_MODES = ("keep_start", "keep_end")


def _no_effect(doc: YamlDoc, plan: V2Plan, path: tuple[str, ...], why: str) -> None:
    line, col = doc.where(path)
    plan.warnings.append(V2Warning(doc.file, line, col, ".".join(path), f"{NO_EFFECT}: {why}"))


def _read_chunk_size(doc: YamlDoc, plan: V2Plan, proc: dict[str, Any]) -> None:
    """ModelZoo's reader cuts a one-field record (pretraining text) larger than read_chunk_size KiB
    (default 1024) into documents; gptx_keep_whole_documents: true keeps them whole."""
    size = proc.get("read_chunk_size", READ_CHUNK_SIZE_KIB)
    where = ("processing", "read_chunk_size")
    if "read_chunk_size" in proc and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise doc.error(where, f"expected a positive whole number of KiB, got {size!r}")
    whole = _typed(
        doc, ("processing", "gptx_keep_whole_documents"), proc.get("gptx_keep_whole_documents", False), bool,
        "true/false",
    )  # fmt: skip
    vsl = bool(plan.options.get("use_vsl"))
    if vsl:  # VSL packs within each read chunk (data/vsl.py), in pretraining and fine-tuning
        plan.options["read_chunk_size"] = size
    if plan.mode != "pretraining":
        why = f"in {plan.mode} mode ModelZoo cuts no record (it cuts one-field records: pretraining text)"
        for key in (
            ("gptx_keep_whole_documents",) if vsl else ("read_chunk_size", "gptx_keep_whole_documents")
        ):
            if key in proc:
                _no_effect(doc, plan, ("processing", key), why)
        return
    plan.options["read_chunk_size"] = size
    plan.options["cut_records"] = not whole


def _truncate_to_msl(doc: YamlDoc, plan: V2Plan, value: Any) -> dict[str, Any]:
    """dataset.truncate_to_msl as ModelZoo's FinetuningTokenGenerator reads it: `max_turn_length`
    (default max_seq_length) and `prompt_truncation_mode` (keep_start / keep_end; anything else, or
    nothing, is keep_end after ModelZoo's warning "Invalid truncation mode set"). Other keys, such as
    the `truncation_mode` of ModelZoo's own summarization_preprocessing.yaml, are not read."""
    path = ("dataset", "truncate_to_msl")
    if not isinstance(value, dict) or not value:
        raise doc.error(
            path,
            f"expected a mapping with max_turn_length and prompt_truncation_mode, got {value!r} (ModelZoo's "
            "finetuning_token_generator.py stops on it)",
        )
    for key in value:
        if key not in TRUNCATE_KEYS:
            _no_effect(
                doc, plan, (*path, str(key)),
                f"ModelZoo's FinetuningTokenGenerator reads only {' and '.join(TRUNCATE_KEYS)} from "
                f"truncate_to_msl{_did_you_mean(str(key), TRUNCATE_KEYS)}",
            )  # fmt: skip
    turn = value.get("max_turn_length")
    if turn is not None:
        turn = _typed(doc, (*path, "max_turn_length"), turn, int, "a number of tokens")
        if turn < 0:
            raise doc.error((*path, "max_turn_length"), f"must be >= 0, got {turn}")
    mode = value.get("prompt_truncation_mode")
    if mode not in TRUNCATION_MODES:
        line, col = doc.where(
            (*path, "prompt_truncation_mode") if "prompt_truncation_mode" in value else path
        )
        what = "is not set" if mode is None else f"is {mode!r}, not keep_start or keep_end"
        plan.warnings.append(
            V2Warning(
                doc.file, line, col, "dataset.truncate_to_msl.prompt_truncation_mode",
                f"{what}: prompts are cut keeping their end (keep_end), as ModelZoo does after its warning "
                "\"Invalid truncation mode set - setting default mode as 'keep_end'.\"",
            )
        )  # fmt: skip
        mode = "keep_end"
    return {"max_turn_length": turn, "prompt_truncation_mode": mode}


# Keys a mode's ModelZoo token generator never reads (its DataPreprocessor logs them as unused).
NLG_UNREAD = (
    "use_ftfy", "ftfy_normalizer", "wikitext_detokenize", "short_seq_prob", "min_sequence_len",
    "pack_sequences", "eos_id", "pad_id", "seed",
)  # fmt: skip


def _mode_keys(
    doc: YamlDoc, plan: V2Plan, setup: dict[str, Any], proc: dict[str, Any], ds: dict[str, Any]
) -> None:
    """What a mode cannot honour is an error; what its generator never reads is a warning."""
    if plan.mode == "finetuning":
        if setup.get("context_splits"):
            raise doc.error(
                ("setup", "context_splits"), "context_splits in finetuning mode is not supported by gptx"
            )
        if proc.get("wikitext_detokenize"):
            raise doc.error(
                ("processing", "wikitext_detokenize"),
                "wikitext_detokenize in finetuning mode is not supported by gptx",
            )
    unread = NLG_UNREAD if plan.mode == "nlg" else ()
    for section, body in (("processing", proc), ("dataset", ds)):
        for key in body:
            if key in unread:
                line, col = doc.where((section, key))
                why = f"ModelZoo's {plan.mode} token generator does not read it"
                plan.warnings.append(
                    V2Warning(doc.file, line, col, f"{section}.{key}", f"{NO_EFFECT}: {why}")
                )


def _metadata_inputs(doc: YamlDoc, files: str) -> list[str]:
    """ModelZoo's `metadata_files`: comma-separated files, each listing input files one per line."""
    inputs: list[str] = []
    for name in files.split(","):
        p = Path(name.strip())
        try:
            inputs += [line.strip() for line in p.read_text().splitlines() if line.strip()]
        except OSError as err:
            raise doc.error(("setup", "metadata_files"), f"cannot read {p}: {err.strerror}") from None
    return inputs


def _tokenizer(doc: YamlDoc, proc: dict[str, Any], out: dict[str, Any], base: Path) -> None:
    """custom_tokenizer gpt2tokenizer / neoxtokenizer + tokenizer_params, huggingface_tokenizer, tokenizer."""
    hf, custom = proc.get("huggingface_tokenizer"), proc.get("custom_tokenizer")
    if hf and custom:
        raise doc.error(
            ("processing", "custom_tokenizer"), "give huggingface_tokenizer or custom_tokenizer, not both"
        )
    params = proc.get("tokenizer_params") or {}
    if not isinstance(params, dict):
        raise doc.error(("processing", "tokenizer_params"), "expected a mapping (vocab_file, encoder_file)")
    P = ("processing", "tokenizer_params")
    if custom in ("gpt2tokenizer", "neoxtokenizer"):
        allowed = ("vocab_file", "encoder_file") if custom == "gpt2tokenizer" else ("encoder_file",)
        for key in params:
            if key not in allowed:
                raise doc.error(
                    P + (key,), f"{custom} takes {' and '.join(allowed)} in tokenizer_params, not '{key}'"
                )
        for key in allowed:
            if not params.get(key):
                raise doc.error(P, f"{custom} needs tokenizer_params.{key}")
        if custom == "gpt2tokenizer":
            # ModelZoo: vocab_file is the BPE merges (gpt2-vocab.bpe), encoder_file the encoder.json.
            out["tokenizer"] = gpt2_pair_spec(
                _rel(base, params["encoder_file"]), _rel(base, params["vocab_file"])
            )
        else:
            out["tokenizer"] = _rel(base, params["encoder_file"])
        return
    if params:
        key = next(iter(params))
        raise doc.error(
            P + (key,), "tokenizer_params is read with custom_tokenizer gpt2tokenizer / neoxtokenizer only"
        )
    if custom is not None and ":" in str(custom) and not Path(str(custom)).exists():
        raise doc.error(
            ("processing", "custom_tokenizer"),
            f"custom tokenizer classes ({custom}) are not supported by gptx: use gpt2tokenizer, neoxtokenizer, "
            "a tokenizer.json or a tokenizer directory",
        )
    tok = hf or custom or proc.get("tokenizer")
    if tok:
        out["tokenizer"] = str(tok)


def _rel(base: Path, path: Any) -> str:
    """ModelZoo resolves paths against the working directory; so does gptx (the config's own dir is not used)."""
    return str(path)


def special_ids(
    tok_eos: int | None, tok_pad: int | None, eos_id: int | None, pad_id: int | None, gpt2: bool
) -> tuple[int | None, int | None]:
    """ModelZoo's eos_id / pad_id overrides (DataPreprocessor.initialize_tokenizer), rule for rule:
    eos_id sets EOS and PAD; pad_id then sets PAD, and EOS too when EOS is unset (or 0); with
    gpt2tokenizer a PAD other than EOS is put back to EOS."""
    eos, pad = tok_eos, tok_pad
    if eos_id is not None:
        eos = pad = eos_id
    if pad_id is not None:
        pad = pad_id
        if not eos:
            eos = pad
        elif pad != eos and gpt2:
            pad = eos
    return eos, pad


def resolve_special_ids(plan: V2Plan, tokenizer_dir: str | None = None) -> None:
    """Fill options eos_id / pad_id from processing.eos_id / pad_id and the tokenizer's own ids."""
    proc = _get(plan.doc, "processing")
    if proc.get("eos_id") is None and proc.get("pad_id") is None:
        return
    from gptx_cli.data.tokenizer import load_tokenizer

    tok = load_tokenizer(plan.options.get("tokenizer", "gpt2"), tokenizer_dir=tokenizer_dir)
    gpt2 = proc.get("custom_tokenizer") == "gpt2tokenizer"
    eos, pad = special_ids(tok.eos_id, tok.pad_id, proc.get("eos_id"), proc.get("pad_id"), gpt2)
    plan.options["eos_id"], plan.options["pad_id"] = eos, pad


def _read_hook(doc: YamlDoc, plan: V2Plan, proc: dict[str, Any]) -> None:
    hook = proc.get("read_hook")
    kwargs = proc.get("read_hook_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise doc.error(("processing", "read_hook_kwargs"), "expected a mapping of hook arguments")
    plan.hook_kwargs = dict(kwargs)
    default = {"pretraining": "text_read_hook", "nlg": "nlg_read_hook"}.get(plan.mode)
    name = str(hook).rsplit(":", 1)[-1] if hook else default
    where = ("processing", "read_hook")
    if name in UNSUPPORTED_HOOKS:
        raise doc.error(where, f"read hook '{name}' is not supported by gptx ({UNSUPPORTED_HOOKS[name]})")
    known = {"pretraining": TEXT_HOOKS, "nlg": NLG_HOOKS, "finetuning": FINETUNING_HOOKS}[plan.mode]
    if name is None:
        raise doc.error(where, f"mode {plan.mode} needs a read_hook ({', '.join(known)})")
    if name not in known:
        every = TEXT_HOOKS + NLG_HOOKS + FINETUNING_HOOKS
        if name in every:
            raise doc.error(
                where, f"read hook '{name}' does not go with mode {plan.mode} (use {', '.join(known)})"
            )
        raise doc.error(
            where, f"unknown read hook '{name}' (gptx runs {', '.join(every)}){_did_you_mean(name, every)}"
        )
    plan.hook = name
    need = {"text_read_hook": ("text_key",), "nlg_read_hook": ("context_key", "completion_key")}.get(name, ())
    for key in need:
        if key not in kwargs and not (key == "text_key" and isinstance(kwargs.get("data_keys"), dict)):
            raise doc.error(("processing", "read_hook_kwargs"), f"{name} needs read_hook_kwargs.{key}")


def run_v2(plan: V2Plan, cli_values: dict[str, Any]) -> dict[str, Any]:
    """Run a loaded v2 config (command-line values win); the one dispatch point for its modes.

    pretraining -> data.preprocess.run_preprocess (with data_splits: data.splits.run_splits first);
    nlg -> data.nlg.run_nlg; finetuning -> data.finetune.run_v2_finetuning(plan, options)."""
    from gptx_cli.data.preprocess import PreprocessOptions, run_preprocess

    values = {**plan.options, **cli_values}
    # ModelZoo's copy of the YAML in data_params.json (utils.py: args_to_params: an absent or empty
    # section is {}, and command-line values go into their section; data_preprocessor.py: dump_args)
    mz = {s: copy.deepcopy(plan.raw.get(s) or {}) for s in SECTIONS}
    for key, section in CLI_SECTIONS.items():
        if key in cli_values and isinstance(mz[section], dict):
            mz[section][key] = cli_values[key]
    values["modelzoo_params"] = mz
    if plan.mode == "finetuning":
        try:
            from gptx_cli.data.finetune import run_v2_finetuning  # type: ignore[attr-defined]
        except ImportError:
            raise plan.doc.error(
                ("setup", "mode"),
                "finetuning mode is not available in this gptx build (gptx_cli/data/finetune.py)",
            ) from None
        result: dict[str, Any] = run_v2_finetuning(plan, values)
        return result
    opts = PreprocessOptions(**values)
    if plan.mode == "nlg":
        from gptx_cli.data.nlg import run_nlg

        return run_nlg(plan, opts)
    if plan.data_splits or plan.context_splits:
        from gptx_cli.data.splits import run_splits

        return run_splits(plan, opts)
    return run_preprocess(opts)
