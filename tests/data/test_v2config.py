"""ModelZoo's shipped v2 preprocessing configs (tests/data/modelzoo_v2/, copied unchanged) run with
`gptx preprocess --config` after only their paths and tokenizer are edited, and their outputs equal a
direct computation with the same libraries (ftfy, numpy, the tokenizer)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ftfy
import numpy as np
import pytest
import yaml
from datagen import jsonl_bytes

from gptx_cli.config.load import load_yaml
from gptx_cli.data import v2config
from gptx_cli.data.hdf5 import read_samples
from gptx_cli.data.splits import normalize_msl
from gptx_cli.data.textclean import wikitext_detokenizer
from gptx_cli.data.tokenizer import load_tokenizer

HERE = Path(__file__).parent / "modelzoo_v2"
MOJIBAKE = [
    "the cafÃ© opened at noon",
    "  padded\u00a0text with an NFD e\u0301 and a ligature \ufb01  ",
    "\u00e2\u20ac\u0153quoted\u00e2\u20ac\u009d",
]


def keys_of(data: object, prefix: tuple = ()) -> set[tuple]:
    if not isinstance(data, dict):
        return set()
    out = set()
    for k, v in data.items():
        out.add(prefix + (k,))
        if prefix[:1] != ("setup",) or k != "data_splits":
            out |= keys_of(v, prefix + (k,))
    return out


def edited(name: str, tmp: Path, gpt2_dir: Path, neox_json: Path) -> Path:
    """The shipped file with only its paths and tokenizer replaced; the key set is unchanged."""
    text = (HERE / f"{name}.yaml").read_text()
    subs = {
        r'"?/input/dir/here"?': "./data",
        r"/path/to/input\b": "./data",
        r"/path/to/text_data": "./data",
        r'"?\./output/dir/here/"?|"?/output/dir/here"?|"?\./data_dir_summarization/"?|/path/to/output_dir|"?/path/to/output"?': "./out",
        r"/path/to/raw_data_splits_dir": "./splits",
        r'"/path/to/vocab"': str(gpt2_dir / "gpt2-vocab.bpe"),
        r'"/path/to/encoder"': str(neox_json if "neoxtokenizer" in text else gpt2_dir / "gpt2-encoder.json"),
        r'"tiiuae/falcon-7b"': str(neox_json),
    }
    for pattern, value in subs.items():
        text = re.sub(pattern, value, text)
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    assert keys_of(yaml.safe_load(text)) == keys_of(yaml.safe_load((HERE / f"{name}.yaml").read_text()))
    return path


@pytest.fixture
def tok_paths(gpt2_tokenizer_dir, neox_tokenizer_json):
    return gpt2_tokenizer_dir, neox_tokenizer_json


def samples_of(out: Path) -> np.ndarray:
    return np.concatenate([read_samples(f) for f in sorted(out.glob("*.h5"))])


def cleaned(texts: list[str], *, wikitext: bool = False) -> list[str]:
    out = []
    for t in texts:  # text_read_hook strips; clean_text: ftfy, then the wikitext detokenizer
        t = ftfy.fix_text(t.strip(), normalization="NFC")
        t = wikitext_detokenizer(t) if wikitext else t
        if t:
            out.append(t)
    return out


def modelzoo_v2(texts: list[str], tok, msl: int, *, pack: bool = True, min_len: int = 10) -> np.ndarray:
    """PretrainingTokenGenerator, as its code reads: chop_doc_into_msl (prefix carried, chunks of msl+1
    at stride msl+1), process_docs (_add_eos_to_doc on the last chunk), create_features_pretraining,
    and the leftover prefix at the end."""
    eos, pad, size = tok.eos_id, tok.pad_id, msl + 1
    prefix: list[int] = []
    samples = []

    def features(chunk: list[int]) -> None:
        if len(chunk) < min_len:
            return
        ids, labels = chunk[:-1], chunk[1:]
        mask = [1] * len(labels)
        n = msl - len(ids)
        samples.append(np.array([ids + [pad] * n, mask + [0] * n, labels + [pad] * n]))

    def add_eos(doc_list: list[list[int]]) -> None:
        if doc_list and doc_list[-1][-1] != eos:
            if len(doc_list[-1]) < size:
                doc_list[-1].append(eos)
            else:
                doc_list[-1][-1] = eos

    for text in texts:
        tokens = prefix + tok.encode(text)
        chunks = [tokens[i : i + size] for i in range(0, len(tokens), size)]
        complete = chunks if len(chunks[-1]) == size else chunks[:-1]
        prefix = [] if len(chunks[-1]) == size else chunks[-1]
        doc_list = [list(c) for c in complete]
        if not pack and prefix:
            doc_list.append(prefix)
            prefix = []
        add_eos(doc_list)
        for c in doc_list:
            features(c)
    if prefix:
        last = [list(prefix)]
        add_eos(last)
        features(last[0])
    return np.stack(samples)


def test_autoregressive_lm_preprocessing(tmp_path, documents, gptx, tok_paths):
    cfg = edited("autoregressive_lm_preprocessing", tmp_path, *tok_paths)
    docs = documents[:12] + MOJIBAKE
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.jsonl").write_bytes(jsonl_bytes(docs))
    res = gptx("preprocess", "--config", cfg.name, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr  # every key of the shipped file is acted on or output-neutral
    tok = load_tokenizer(tok_paths[0])
    assert (samples_of(tmp_path / "out") == modelzoo_v2(cleaned(docs), tok, 2048)).all()


def test_hf_autoregressive_lm_preprocessing(tmp_path, documents, gptx, tok_paths):
    cfg = edited("hf_autoregressive_lm_preprocessing", tmp_path, *tok_paths)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.jsonl").write_bytes(jsonl_bytes(documents[:6] + MOJIBAKE))
    res = gptx("preprocess", "--config", cfg.name, "--max-seq-length", "256", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    tok = load_tokenizer(tok_paths[1])
    samples = samples_of(tmp_path / "out")
    assert (samples[:, 0][samples[:, 1] == 0] == tok.pad_id).all()  # NeoX pads with <|padding|>
    assert (samples == modelzoo_v2(cleaned(documents[:6] + MOJIBAKE), tok, 256)).all()


def test_wikitext103_lm_preprocessing(tmp_path, gptx, tok_paths):
    cfg = edited("wikitext103_lm_preprocessing", tmp_path, *tok_paths)
    lines = [
        " = Valkyria Chronicles III = ",
        "",
        " Senjō no Valkyria 3 : Unrecorded Chronicles ( Japanese : 戦場のヴァルキュリア3 ) , commonly referred "
        "to as Valkyria Chronicles III outside Japan , is a tactical role @-@ playing video game . ",
        " The game 's battle system , the BliTZ system , is carried over directly from Valkyira Chronicles . ",
        " It sold 1 @,@ 000 @,@ 000 copies at a price of 3 @.@ 5 cafÃ© dollars . ",
    ] * 8
    (tmp_path / "data").mkdir()
    (tmp_path / "data/wiki.train.txt").write_text("\n".join(lines) + "\n")
    res = gptx("preprocess", "--config", cfg.name, "--max-seq-length", "128", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # ModelZoo's v2 reader: one document per line of a .txt file; wikitext_detokenize: true.
    tok = load_tokenizer(tok_paths[0])
    samples = samples_of(tmp_path / "out")
    assert (samples == modelzoo_v2(cleaned(lines, wikitext=True), tok, 128)).all()
    text = tok.decode(samples[:, 0][samples[:, 1] == 1].tolist())
    assert "role-playing" in text and " @-@ " not in text and "café" in text


def test_nlg_preprocessing(tmp_path, gptx, tok_paths):
    cfg = edited("nlg_preprocessing", tmp_path, *tok_paths)
    rng = np.random.default_rng(0)
    recs = [
        {"context": rng.integers(1, 50000, int(rng.integers(3, 40))).tolist(),
         "completion": rng.integers(1, 50000, int(rng.integers(2, 30))).tolist()}
        for _ in range(25)
    ]  # fmt: skip
    (tmp_path / "data").mkdir()
    (tmp_path / "data/e2e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = gptx("preprocess", "--config", cfg.name, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # NLGTokenGenerator reads no clean-up setting: the shipped use_ftfy is said to have no effect.
    line = next(i for i, t in enumerate(cfg.read_text().splitlines(), 1) if t.strip().startswith("use_ftfy:"))
    assert (
        f"{cfg.name}:{line}:5: warning: processing.use_ftfy: accepted for ModelZoo compatibility; has no "
        "effect in gptx: ModelZoo's nlg token generator does not read it"
    ) in res.stderr
    samples = np.concatenate([read_samples(f) for f in sorted((tmp_path / "out").glob("*.h5"))])
    assert samples.shape == (25, 3, 1024)
    for s, r in zip(samples, recs, strict=True):  # NLGTokenGenerator.encode, computed here with numpy
        c, p = np.array(r["context"]), np.array(r["completion"])
        ids = np.pad(np.concatenate((c, p[:-1])), (0, 1024 - len(c) - len(p) + 1))
        labels = np.pad(np.concatenate((c[1:], p)), (0, 1024 - len(c) - len(p) + 1))
        mask = np.zeros(1024, dtype=int)
        mask[len(c) - 1 : len(c) - 1 + len(p)] = 1
        mask[0] = 0  # ModelZoo's np.where(mask != 0) drops position 0
        assert (s[0] == ids).all() and (s[2] == labels).all() and (s[1] == mask).all()


def _split_docs(n: int) -> list[str]:
    return [
        f"document {i}: " + " ".join(f"w{(i * 7 + j) % 97}" for j in range(20 + i % 30)) for i in range(n)
    ]


def test_pretraining_data_context_split(tmp_path, gptx, tok_paths):
    """data_splits + context_splits: the assignment equals ModelZoo's draws computed here with numpy."""
    import zstandard

    cfg = edited("pretraining_data_context_split", tmp_path, *tok_paths)
    docs = _split_docs(300)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.jsonl").write_bytes(jsonl_bytes(docs[:150]))
    (tmp_path / "data/b.jsonl").write_bytes(jsonl_bytes(docs[150:]))
    res = gptx("preprocess", "--config", cfg.name, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # data_split.py with processes 1, split_seed 0: per document rng.integers(0, n_files), then the split,
    # then the context length.
    setup = yaml.safe_load(cfg.read_text())["setup"]
    rng = np.random.default_rng(0)
    files = ["a", "b"]
    expected: dict[str, list[str]] = {}
    for doc in docs:
        named = files[int(rng.integers(0, 2))]
        names = list(setup["data_splits"])
        fr = [setup["data_splits"][n]["split_fraction"] for n in names]
        split = names[int(rng.choice(np.arange(2), p=np.array(fr) / sum(fr)))]
        cs = setup["data_splits"][split]["context_splits"]
        sf = np.array(cs["split_fractions"], dtype=float)
        msl = cs["MSL_List"][int(rng.choice(np.arange(len(sf)), p=sf / sf.sum()))]
        expected.setdefault(f"{split}/msl_{msl}/{named}_jsonl.jsonl.zst", []).append(doc)
    written = {
        str(p.relative_to(tmp_path / "splits")): [
            json.loads(line)["text"]
            for line in zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes()).splitlines()
        ]
        for p in (tmp_path / "splits").rglob("*.jsonl.zst")
    }
    assert written == expected
    tok = load_tokenizer(tok_paths[1])
    for split, body in setup["data_splits"].items():
        for msl in body["context_splits"]["MSL_List"]:
            out = tmp_path / "out" / split / f"msl_{msl}"
            # the split's files are read sorted: a_jsonl before b_jsonl
            ordered = [d for key in sorted(k for k in expected if k.startswith(f"{split}/msl_{msl}/"))
                       for d in expected[key]]  # fmt: skip
            assert (samples_of(out) == modelzoo_v2(cleaned(ordered), tok, normalize_msl(msl))).all()


def test_curation_corpus_config_names_a_hook_modelzoo_does_not_define(tmp_path, gptx, tok_paths):
    cfg = edited("curation_corpus_summarization_preprocessing", tmp_path, *tok_paths)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.jsonl").write_text(json.dumps({"source": "a", "target": "b"}) + "\n")
    res = gptx("preprocess", "--config", cfg.name, cwd=tmp_path)
    hook_line = next(
        i for i, t in enumerate(cfg.read_text().splitlines(), 1) if t.strip().startswith("read_hook:")
    )
    # ModelZoo ships this file with a hook name its hooks.py does not define.
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {cfg.name}:{hook_line}:5: processing.read_hook: unknown read hook 'prompt_completion_key' "
        "(gptx runs text_read_hook, nlg_read_hook, prompt_completion_text_read_hook, chat_read_hook) "
        "(did you mean 'prompt_completion_text_read_hook'?)"
    )


def test_summarization_config_truncates_prompts_keeping_their_end(tmp_path, gptx, tok_paths, documents):
    """summarization_preprocessing.yaml's truncate_to_msl: its `truncation_mode` is not a key ModelZoo
    reads (it reads prompt_truncation_mode), so ModelZoo warns and keeps each prompt's end; with
    max_turn_length 512 an over-long prompt loses its first tokens until the example is msl tokens."""
    cfg = edited("summarization_preprocessing", tmp_path, *tok_paths)
    neox = load_tokenizer(str(tok_paths[1]))
    long_source = " ".join(documents[:30])  # far over 2048 tokens
    records = [
        {"source": long_source, "target": documents[0][:300]},
        {"source": documents[1][:500], "target": documents[2][:200]},  # fits: untouched
        {"source": documents[3][:400], "target": " ".join(documents[:30])},  # the completion loses its end
    ]
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    res = gptx("preprocess", "--config", cfg.name, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = cfg.read_text().splitlines()
    at = {t.strip().split(":")[0]: (i, len(t) - len(t.lstrip()) + 1) for i, t in enumerate(lines, 1)}
    assert res.stderr.splitlines()[:2] == [
        f"{cfg.name}:{at['truncation_mode'][0]}:{at['truncation_mode'][1]}: warning: "
        "dataset.truncate_to_msl.truncation_mode: accepted for ModelZoo compatibility; has no effect in gptx: "
        "ModelZoo's FinetuningTokenGenerator reads only max_turn_length and prompt_truncation_mode from "
        "truncate_to_msl (did you mean 'prompt_truncation_mode'?)",
        f"{cfg.name}:{at['truncate_to_msl'][0]}:{at['truncate_to_msl'][1]}: warning: "
        "dataset.truncate_to_msl.prompt_truncation_mode: is not set: prompts are cut keeping their end "
        '(keep_end), as ModelZoo does after its warning "Invalid truncation mode set - setting default mode '
        "as 'keep_end'.\"",
    ]
    samples = samples_of(tmp_path / "out")
    assert len(samples) == 3
    eos = "<|endoftext|>"

    def ids_of(rec: dict) -> list[int]:  # sep_token: null; prompt + completion + EOS in one call
        text = ftfy.fix_text(rec["source"], normalization="NFC") + ftfy.fix_text(rec["target"])
        return neox.hf.encode(text + eos).ids

    full = ids_of(records[0])
    completion = len(neox.hf.encode(ftfy.fix_text(records[0]["target"]) + eos).ids)
    assert len(full) > 2048 + 512
    kept = full[len(full) - 2048 :]  # keep_end: the prompt's first tokens go
    assert samples[0, 0, :-1].tolist() == kept[:-1] and samples[0, 2, :-1].tolist() == kept[1:]
    assert 0 < completion - 1 <= int(samples[0, 1].sum()) <= completion + 1
    short = ids_of(records[1])
    assert samples[1, 0, : len(short) - 1].tolist() == short[:-1]
    cut = ids_of(records[2])[:2048]  # part two: the completion (and its EOS) lose their end
    assert samples[2, 0, :-1].tolist() == cut[:-1] and samples[2, 2, :-1].tolist() == cut[1:]


def test_every_key_of_the_shipped_configs_is_known():
    for path in sorted(HERE.glob("*.yaml")):
        data = load_yaml(path).data
        for section, body in data.items():
            for key in body:
                assert key in v2config.V2_KEYS and section in v2config.V2_KEYS[key].sections, (path.name, key)


@pytest.mark.parametrize("key", sorted(v2config.V2_KEYS))
def test_every_v2_key_is_acted_on_quiet_warned_checked_or_finetunings(tmp_path, key):
    rule = v2config.V2_KEYS[key]
    assert rule.status in (
        v2config.ACTED,
        v2config.QUIET,
        v2config.WARN,
        v2config.CHECKED,
        v2config.FINETUNING,
    )
    body = {"setup": {"data": {"source": "./d", "type": "local"}, "output_dir": "./o", "mode": "pretraining"},
            "processing": {"custom_tokenizer": "gpt2", "read_hook_kwargs": {"text_key": "text"}}}  # fmt: skip
    section = rule.sections[0]
    if rule.status == v2config.WARN:
        body.setdefault(section, {})[key] = 8
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        plan = v2config.load_v2_config(path)
        (w,) = plan.warnings
        line = next(
            i for i, t in enumerate(path.read_text().splitlines(), 1) if t.strip().startswith(f"{key}:")
        )
        assert (w.line, w.path) == (line, f"{section}.{key}")
        assert w.format().startswith(
            f"{path}:{line}:{w.col}: warning: {section}.{key}: accepted for ModelZoo"
        )
    elif rule.status == v2config.CHECKED:
        body.setdefault(section, {})[key] = "something else"
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        with pytest.raises(Exception, match=rf"{section}\.{key}: .*not supported by gptx"):
            v2config.load_v2_config(path)
    elif rule.status == v2config.QUIET:
        body.setdefault(section, {})[key] = 1
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        assert v2config.load_v2_config(path).warnings == []
    elif rule.status == v2config.ACTED:  # read by the loader (the per-config tests check the effect)
        assert (
            f'"{key}"' in (Path(v2config.__file__).read_text().split("V2_KEYS: dict")[1].split("def ", 1)[1])
        )


def test_shuffle_equals_modelzoos_two_numpy_passes(tmp_path, documents, gptx, tok_paths):
    base = yaml.safe_load(edited("autoregressive_lm_preprocessing", tmp_path, *tok_paths).read_text())
    base["processing"].update(max_seq_length=64, files_per_record=7)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.jsonl").write_bytes(jsonl_bytes(documents[:10]))
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(base))
    base["processing"].update(shuffle=True, shuffle_seed=7)
    base["setup"]["output_dir"] = "./shuffled"
    (tmp_path / "shuf.yaml").write_text(yaml.safe_dump(base))
    for cfg in ("plain.yaml", "shuf.yaml"):
        res = gptx("preprocess", "--config", cfg, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    plain = [read_samples(f) for f in sorted((tmp_path / "out").glob("*.h5"))]
    n = len(plain)
    np.random.seed(7)  # first pass: each file's samples to files drawn with np.random.choice
    dest = [np.random.choice(np.arange(n), len(rows)) for rows in plain]
    expected = []
    for pid in range(n):  # second pass: each file permuted with np.random.seed(seed + pid)
        rows = np.concatenate([rows[d == pid] for rows, d in zip(plain, dest, strict=True)])
        np.random.seed(7 + pid)
        idx = np.arange(len(rows))
        np.random.shuffle(idx)
        expected.append(rows[idx])
    got = [read_samples(f) for f in sorted((tmp_path / "shuffled").glob("*.h5"))]
    assert len(got) == n and all((g == e).all() for g, e in zip(got, expected, strict=True))
    assert not np.array_equal(np.concatenate(got), np.concatenate(plain))  # the order did change


def test_bad_keys_are_one_line_errors_with_file_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("setup:\n  data: {source: ./d, type: local}\n  mode: dpo\n")
    with pytest.raises(Exception, match=r"c\.yaml:3:3: setup\.mode: mode 'dpo' is not supported by gptx"):
        v2config.load_v2_config(path)
    path.write_text(
        "setup:\n  mode: pretraining\nprocessing:\n  read_hook: 'x.hooks:pretraining_image_captions_hook'\n"
    )
    with pytest.raises(
        Exception,
        match=r"c\.yaml:4:3: processing\.read_hook: read hook 'pretraining_image_captions_hook' is not supported",
    ):
        v2config.load_v2_config(path)
    path.write_text("processing:\n  use_fty: true\n")
    with pytest.raises(
        Exception,
        match=r"c\.yaml:2:3: processing\.use_fty: unknown key 'use_fty' in section 'processing' \(did you mean 'use_ftfy'\?\)",
    ):
        v2config.load_v2_config(path)
    path.write_text("processing:\n  shuffle: true\n  shuffle: false\n")
    with pytest.raises(Exception, match=r"duplicate key 'shuffle'"):
        v2config.load_v2_config(path)
    path.write_text("processing:\n  pack_sequences: true\ndataset:\n  is_multimodal: true\n")
    with pytest.raises(
        Exception, match=r"c\.yaml:4:3: dataset\.is_multimodal: is_multimodal: True is not supported by gptx"
    ):
        v2config.load_v2_config(path)


def test_data_params_holds_modelzoos_copy_of_the_yaml_with_the_command_line_values(
    tmp_path, documents, gptx, tok_paths
):
    """data_params.json's setup / processing / dataset: the YAML as written, the flags that are ModelZoo
    arguments in their section (utils.py: update_params), the tokenizer's ids; gptx's record under gptx."""
    base = yaml.safe_load(edited("autoregressive_lm_preprocessing", tmp_path, *tok_paths).read_text())
    base["processing"].update(max_seq_length=64)
    base.pop("dataset", None)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.jsonl").write_bytes(jsonl_bytes(documents[:10]))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(base))
    res = gptx("preprocess", "--config", "c.yaml", "--max-seq-length", "32", "-o", "cli", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    params = json.loads((tmp_path / "cli" / "data_params.json").read_text())
    assert params["setup"] == {**base["setup"], "output_dir": "cli"}
    want = {**base["processing"], "max_seq_length": 32}
    assert {
        k: v for k, v in params["processing"].items() if k not in ("vocab_size", "eos_id", "pad_id")
    } == want
    assert (params["processing"]["vocab_size"], params["processing"]["eos_id"]) == (50257, 50256)
    assert params["dataset"] == {}  # absent in the YAML: {} as ModelZoo's args_to_params makes it
    assert params["gptx"]["processing"]["max_seq_length"] == 32
    assert params["gptx"]["setup"]["output_dir"] == "cli"
