"""Make the preprocessing goldens in this directory with Cerebras ModelZoo 2.10's own preprocessing.

Runs ONLY in the ModelZoo reference environment (ModelZoo Release_2.10.0, built by
../shared/tools/modelzoo-reference.sh, i.e. /work/shared/tools/modelzoo-reference.sh); the CI test
(tests/data/test_modelzoo_preprocess_goldens.py) only reads what it writes:

    PYTHONPATH=$MZREF_DIR/stubs $MZREF_DIR/venv/bin/python tests/golden/modelzoo/preprocess/make_goldens.py

What it does, in order:

1. corpus/: small corpora made here from a fixed seed (sentences of a fixed word list, with numbers,
   quotes, paragraphs, accented words, a little mojibake and NFD text for ftfy), committed as files:
   `single/` (one .jsonl), `several/` (a .jsonl, a .json.gz and a .jsonl.zst in a sub-directory),
   `txt/` (two .txt files, one document per line, with a blank line), `short/` (documents shorter
   than max_seq_length, for VSL: ModelZoo 2.10's VSL preprocessing stops on a read chunk that gives more
   samples than documents, which longer ones can), `endings/`
   (documents ending in an emoji and in CJK), `long/` (documents larger than `read_chunk_size`),
   `finetune/` (prompt/completion), `chat/` (multi-turn `messages`), `summarization/`
   (`source`/`target`).
2. For every case in CASES: a v2 YAML made from one of ModelZoo's shipped configs
   (data_preparation/data_preprocessing/configs/*.yaml of the reference source), changing only paths,
   the tokenizer (GPT-2: gpt2tokenizer with gpt2-vocab.bpe / gpt2-encoder.json; NeoX: neoxtokenizer
   with neox-encoder.json), sizes (max_seq_length 128, max_turn_length scaled with it) and what the
   case is about. It is written to `cases/<case>/config.yaml` with `@CORPUS@` (this directory's
   corpus/) and `@TOKENIZERS@` (the shared tokenizer assets) as placeholders and relative output
   paths (`./out`, `./splits`), then run by `cszoo data_preprocess run --config` in a scratch dir.
3. From the run, per output directory D (`out`, or `out/<split>` with data splits):
   `cases/<case>/D/data_params.json` exactly as ModelZoo wrote it but for the placeholders put back
   into the paths, and `cases/<case>/samples.npz`: for each D, every HDF5 dataset (`D/data`) with the
   samples of all of D's files concatenated in ModelZoo's order (output_chunk_<process>_<chunk>.h5 by
   process and chunk number, then the leftover-prefix file; output_chunk_<k>.h5 by k when shuffled);
   `cases/<case>/manifest.json` names the files and their n_examples.

Arguments select parts: `corpus`, case names (default: everything). The outputs are deterministic: a
rerun rewrites identical files.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
CASES_DIR = HERE / "cases"
MZREF = Path(os.environ.get("MZREF_DIR", "/tmp/mzref"))
CSZOO = str(MZREF / "venv" / "bin" / "cszoo")
SHIPPED = MZREF / "modelzoo" / "src/cerebras/modelzoo/data_preparation/data_preprocessing/configs"
TOKENIZERS = Path(os.environ.get("GPTX_SHARED", "/work/shared")) / "assets" / "tokenizers"
ENV = {
    **os.environ,
    "PYTHONPATH": str(MZREF / "stubs"),
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
MSL = 128

CORPUS_PH, TOKENIZERS_PH = "@CORPUS@", "@TOKENIZERS@"  # placeholders in the committed configs
GPT2 = {
    "custom_tokenizer": "gpt2tokenizer",
    "tokenizer_params": {
        "vocab_file": f"{TOKENIZERS_PH}/gpt2/gpt2-vocab.bpe",
        "encoder_file": f"{TOKENIZERS_PH}/gpt2/gpt2-encoder.json",
    },
}
NEOX = {
    "custom_tokenizer": "neoxtokenizer",
    "tokenizer_params": {"encoder_file": f"{TOKENIZERS_PH}/neox-20b/neox-encoder.json"},
}

# ------------------------------------------------------------------------------------------ corpus
WORDS = (
    "the of and to in is was for on that with as by at from his her it an be this which or are had "
    "not but were they their one all new also been has first two after other more who time years "
    "city river north school music world game later during state war built three series team year "
    "near league film known south station church album second company number since season group "
    "under include record local small house party early western village before large around open "
    "between until village county line park bridge island forest harbour valley market garden "
    "library engine signal report window letter winter summer morning evening yellow silver purple"
).split()
ODD = ["café", "naïve", "Zürich", "coöperate", "façade", "résumé", "Ångström", "don't", "it's", "U.S."]


def sentence(rnd: random.Random, lo: int = 4, hi: int = 18) -> str:
    words = [rnd.choice(WORDS) for _ in range(rnd.randint(lo, hi))]
    for i in range(len(words)):
        r = rnd.random()
        if r < 0.04:
            words[i] = rnd.choice(ODD)
        elif r < 0.07:
            words[i] = str(
                rnd.choice([rnd.randint(0, 99), rnd.randint(1800, 2030), rnd.randint(1000, 999999)])
            )
        elif r < 0.09:
            words[i] = f'"{words[i]}"'
        elif r < 0.11 and i < len(words) - 1:
            words[i] += ","
        elif r < 0.12:
            words[i] = f"({words[i]})"
    words[0] = words[0][:1].upper() + words[0][1:]
    return " ".join(words) + rnd.choice([".", ".", ".", "!", "?", ";"] if len(words) > 6 else ["."])


def paragraph(rnd: random.Random, n: int) -> str:
    return " ".join(sentence(rnd) for _ in range(n))


def document(rnd: random.Random, sentences: int) -> str:
    paras, left = [], sentences
    while left > 0:
        k = min(left, rnd.randint(1, 6))
        paras.append(paragraph(rnd, k))
        left -= k
    sep = rnd.choice(["\n\n", "\n", " "])
    text = sep.join(paras)
    r = rnd.random()
    if r < 0.05:
        text = "  " + text + "\n"  # stripped by text_read_hook
    elif r < 0.08:
        text = text.replace("e ", "e\u0301 ", 1)  # NFD: ftfy's NFC composes it
    elif r < 0.10:
        text = "\u00e2\u20ac\u0153" + text + "\u00e2\u20ac\u009d"  # mojibake curly quotes: ftfy fixes them
    return text


def documents(seed: int, n: int, sizes: tuple[int, ...] = (1, 2, 3, 5, 8, 12, 20)) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        if i % 37 == 5:
            out.append(rnd.choice(["Hi.", "Yes!", "The end.", "North river."]))  # < min_sequence_len tokens
        else:
            out.append(document(rnd, rnd.choice(sizes)))
    return out


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_corpus() -> None:
    import zstandard

    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    write(CORPUS / "single/docs.jsonl", jsonl([{"text": t} for t in documents(1, 150)]))
    docs = documents(2, 120)
    write(CORPUS / "several/a.jsonl", jsonl([{"text": t} for t in docs[:40]]))
    write(CORPUS / "several/b.json.gz", gzip.compress(jsonl([{"text": t} for t in docs[40:80]]), mtime=0))
    write(
        CORPUS / "several/sub/c.jsonl.zst",
        zstandard.ZstdCompressor(level=3).compress(jsonl([{"text": t} for t in docs[80:]])),
    )
    rnd = random.Random(3)
    lines = [paragraph(rnd, rnd.randint(1, 8)) for _ in range(100)]
    lines[17] = ""  # a blank line: an empty document
    write(CORPUS / "txt/one.txt", ("\n".join(lines[:60]) + "\n").encode())
    write(CORPUS / "txt/two.txt", ("\n".join(lines[60:]) + "\n").encode())
    rnd = random.Random(4)  # short: 1-4 sentences of 4-12 words (< 100 GPT-2 tokens each)
    short = [" ".join(sentence(rnd, 4, 12) for _ in range(rnd.randint(1, 4))) for _ in range(200)]
    write(CORPUS / "short/docs.jsonl", jsonl([{"text": t} for t in short]))
    endings = documents(5, 24, sizes=(1, 2, 3))
    endings[3] += " We had a great time \U0001f642"  # 🙂: several byte-level tokens
    endings[7] += " See you soon \U0001f44d\U0001f3fd"  # 👍🏽
    endings[11] += " 我们今天去了北京"  # CJK
    endings[15] += " The station is called 東京駅"
    endings[19] += " Fin: été"  # a 2-byte character at the end
    write(CORPUS / "endings/docs.jsonl", jsonl([{"text": t} for t in endings]))
    rnd = random.Random(6)
    long = documents(7, 30, sizes=(1, 2, 3))
    long[4] = "\n\n".join(paragraph(rnd, 6) for _ in range(6))  # ~4 KB, paragraphs and sentences
    long[12] = " ".join(rnd.choice(WORDS) for _ in range(500))  # ~3 KB without a sentence end
    long[20] = "".join(paragraph(rnd, 2) + " Ærø café " for _ in range(10))  # non-ASCII, > 1 KiB
    write(CORPUS / "long/docs.jsonl", jsonl([{"text": t} for t in long]))
    make_finetune_corpora()


def make_finetune_corpora() -> None:
    rnd = random.Random(8)
    qa = []
    for i in range(140):
        q = " ".join(sentence(rnd, 3, 10) for _ in range(rnd.randint(1, 3)))
        a = " ".join(sentence(rnd, 3, 12) for _ in range(rnd.randint(1, 4)))
        if i % 23 == 4:
            q, a = "Why?", "Yes."  # fewer than min_sequence_len tokens: dropped
        elif i % 29 == 9:
            a = paragraph(rnd, 14)  # longer than max_seq_length: dropped (or truncated)
        qa.append({"prompt": "Question: " + q, "completion": " Answer: " + a})
    write(CORPUS / "finetune/qa.jsonl", jsonl(qa))
    chats = []
    for i in range(80):
        turns = []
        if i % 3 == 0:
            turns.append({"role": "system", "content": "You are a helpful guide. " + sentence(rnd, 3, 8)})
        for _ in range(rnd.randint(1, 3)):
            turns.append({"role": "user", "content": sentence(rnd, 3, 10)})
            turns.append(
                {"role": "assistant", "content": " ".join(sentence(rnd) for _ in range(rnd.randint(1, 2)))}
            )
        chats.append({"messages": turns})
    write(CORPUS / "chat/chats.jsonl", jsonl(chats))
    summ = []
    for _ in range(60):
        article = "\n".join(paragraph(rnd, rnd.randint(1, 3)) for _ in range(rnd.randint(1, 4)))
        summ.append({"source": article, "target": sentence(rnd, 5, 14)})
    write(CORPUS / "summarization/articles.jsonl", jsonl(summ))


# ------------------------------------------------------------------------------------------- cases
def shipped(name: str) -> dict:
    return yaml.safe_load((SHIPPED / f"{name}.yaml").read_text())


def with_tokenizer(proc: dict, tokenizer: dict) -> dict:
    """`proc` with its tokenizer keys replaced by `tokenizer`'s (where the first one was) and
    max_seq_length set to MSL; the order of the other keys is kept."""
    out: dict = {}
    for key, value in proc.items():
        if key in ("huggingface_tokenizer", "custom_tokenizer", "tokenizer_params"):
            out.update(copy.deepcopy(tokenizer))
        else:
            out[key] = MSL if key == "max_seq_length" else value
    return out


def pretraining(source: str, tokenizer: dict = GPT2, **processing) -> dict:
    """autoregressive_lm_preprocessing.yaml with its paths, tokenizer and max_seq_length replaced."""
    cfg = shipped("autoregressive_lm_preprocessing")
    cfg["setup"]["data"]["source"] = f"{CORPUS_PH}/{source}"
    cfg["setup"]["output_dir"] = "./out"
    cfg["processing"] = with_tokenizer(cfg["processing"], tokenizer)
    cfg["processing"].update(processing)
    return cfg


def case_pretrain_gpt2() -> dict:
    return pretraining("single")


def case_pretrain_neox() -> dict:
    return pretraining("single", NEOX)


def case_shuffle() -> dict:
    return pretraining("single", shuffle=True, shuffle_seed=3)


def case_shuffle_files() -> dict:
    """Shuffled over several files: ModelZoo writes ceil(input bytes / write_chunk_size KiB) of them."""
    return pretraining("single", shuffle=True, shuffle_seed=3, write_chunk_size=16)


def case_no_packing() -> dict:
    cfg = pretraining("single")
    cfg["dataset"]["pack_sequences"] = False
    return cfg


def case_several_files() -> dict:
    return pretraining("several", NEOX)


def case_txt() -> dict:
    return pretraining("txt")


def case_vsl() -> dict:
    cfg = pretraining("short")
    cfg["dataset"]["use_vsl"] = True
    return cfg


def case_vsl_long() -> dict:
    """VSL over documents longer than max_seq_length (cut into pieces of msl + 1 tokens). ModelZoo's run
    completes here: no read chunk gives more samples than documents (where one does, it stops)."""
    cfg = pretraining("single")
    cfg["dataset"]["use_vsl"] = True
    return cfg


def case_vsl_read_chunks() -> dict:
    """VSL packs within each read chunk (1 KiB here), chunks running on from one .txt file to the next."""
    cfg = pretraining("txt", read_chunk_size=1)
    cfg["dataset"]["use_vsl"] = True
    return cfg


def case_endings() -> dict:
    return pretraining("endings")


def case_read_chunk_size() -> dict:
    return pretraining("long", read_chunk_size=1)  # KiB: the documents of 3-4 KB are split


def finetuning_split(source: str, tokenizer: dict = GPT2) -> dict:
    """finetuning_data_split.yaml with its paths, tokenizer, keys and max_seq_length replaced."""
    cfg = shipped("finetuning_data_split")
    cfg["setup"]["data"]["source"] = f"{CORPUS_PH}/{source}"
    cfg["setup"]["data_splits_dir"] = "./splits"
    cfg["setup"]["output_dir"] = "./out"
    proc = cfg["processing"] = with_tokenizer(cfg["processing"], tokenizer)
    proc["read_hook_kwargs"] = {"prompt_key": "prompt", "completion_key": "completion"}
    return cfg


def case_finetune_splits() -> dict:
    return finetuning_split("finetune")


def case_chat() -> dict:
    cfg = shipped("multi_turn_dialogue_preprocessing")
    cfg["setup"]["data"]["source"] = f"{CORPUS_PH}/chat"
    cfg["setup"]["output_dir"] = "./out"
    cfg["processing"] = with_tokenizer(cfg["processing"], NEOX)
    return cfg


def case_finetune_vsl() -> dict:
    cfg = shipped("finetuning_data_split")
    for key in ("data_splits_dir", "data_splits"):
        cfg["setup"].pop(key)
    cfg["setup"]["data"]["source"] = f"{CORPUS_PH}/finetune"
    cfg["setup"]["output_dir"] = "./out"
    proc = cfg["processing"] = with_tokenizer(cfg["processing"], GPT2)
    proc["read_hook_kwargs"] = {"prompt_key": "prompt", "completion_key": "completion"}
    cfg["dataset"] = {"use_vsl": True}
    return cfg


def case_finetune_vsl_chunks() -> dict:
    """Fine-tuning VSL bins within each read chunk (1 KiB here)."""
    cfg = case_finetune_vsl()
    cfg["processing"]["read_chunk_size"] = 1
    return cfg


def case_summarization() -> dict:
    cfg = shipped("summarization_preprocessing")
    cfg["setup"]["data"]["source"] = f"{CORPUS_PH}/summarization"
    cfg["setup"]["output_dir"] = "./out"
    cfg["processing"] = with_tokenizer(cfg["processing"], NEOX)
    cfg["dataset"]["truncate_to_msl"]["max_turn_length"] = 512 * MSL // 2048  # the shipped ratio
    return cfg


CASES = {name.removeprefix("case_"): fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


# --------------------------------------------------------------------------------------------- run
def sample_order(name: str) -> tuple:
    """ModelZoo's file order: output_chunk_<process>_<chunk>.h5 by numbers, the prefix file of a
    process after its chunks; output_chunk_<k>.h5 (shuffled) by k."""
    m = re.fullmatch(r"output_chunk_(\d+)(?:_(\d+|prefix))?\.h5", name)
    assert m, name
    tail = m.group(2)
    return (int(m.group(1)), 1 if tail == "prefix" else 0, int(tail) if tail and tail != "prefix" else 0)


def run(cmd: list[str], log: Path, cwd: Path) -> None:
    with log.open("w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=ENV, cwd=cwd)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {r.returncode}), see {log}:\n{log.read_text()[-3000:]}")


def placeholders(text: str) -> str:
    return text.replace(str(CORPUS), CORPUS_PH).replace(str(TOKENIZERS), TOKENIZERS_PH)


def run_case(name: str, cfg: dict, work: Path) -> None:
    import h5py
    import numpy as np

    case_dir = CASES_DIR / name
    if case_dir.exists():
        shutil.rmtree(case_dir)
    case_dir.mkdir(parents=True)
    text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
    (case_dir / "config.yaml").write_text(text)
    run_dir = work / name
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(
        text.replace(CORPUS_PH, str(CORPUS)).replace(TOKENIZERS_PH, str(TOKENIZERS))
    )
    run([CSZOO, "data_preprocess", "run", "--config", "config.yaml"], work / f"{name}.log", cwd=run_dir)
    arrays, manifest = (
        {},
        {"modelzoo_commit": (MZREF / "modelzoo" / "COMMIT").read_text().strip(), "outputs": {}},
    )
    for params in sorted((run_dir / "out").rglob("data_params.json")):
        out = params.parent
        rel = out.relative_to(run_dir).as_posix()
        files = sorted((p for p in out.glob("*.h5")), key=lambda p: sample_order(p.name))
        entry = manifest["outputs"][rel] = {"files": []}
        per_key: dict[str, list] = {}
        for f in files:
            with h5py.File(f, "r") as h5:
                entry["files"].append(
                    {"name": f.name, "n_examples": int(h5.attrs["n_examples"]), "datasets": sorted(h5)}
                )
                for key in h5:
                    per_key.setdefault(key, []).append(h5[key][()])
        for key, parts in per_key.items():
            arrays[f"{rel}/{key}"] = np.concatenate(parts)
        dest = case_dir / rel / "data_params.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(placeholders(params.read_text()))
        entry["side_files"] = sorted(p.name for p in out.iterdir() if p.is_file() and p.suffix != ".h5")
    np.savez_compressed(case_dir / "samples.npz", **arrays)
    (case_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    shapes = {k: v.shape for k, v in arrays.items()}
    print(f"{name}: {shapes}", flush=True)


if __name__ == "__main__":
    only = sys.argv[1:]
    unknown = set(only) - set(CASES) - {"corpus"}
    if unknown:
        sys.exit(f"unknown part(s) {sorted(unknown)}; parts: corpus, {', '.join(CASES)}")
    if not only or "corpus" in only:
        make_corpus()
    with tempfile.TemporaryDirectory(prefix="mzprep-") as tmp:
        for name, make in CASES.items():
            if not only or name in only:
                run_case(name, make(), Path(tmp))
