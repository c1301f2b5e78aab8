"""ModelZoo's text clean-up before tokenising, and the read hooks gptx runs.

ModelZoo (data_preparation/data_preprocessing) turns each input record into text through a *read hook*
and cleans the text with `clean_text`: `ftfy.fix_text(text, normalization=ftfy_normalizer)` when
`use_ftfy`, then `wikitext_detokenizer` when `wikitext_detokenize`. An empty result is not a document.
`text_read_hook` also strips the text. The same functions, with the same libraries, are here; the
preprocessor applies a `TextCleaning` to every document in its worker processes.

Read hooks gptx runs (by the function name at the end of ModelZoo's `module:function` path):
`text_read_hook` (pretraining), `nlg_read_hook` (`setup.mode: nlg`, gptx_cli/data/nlg.py);
`prompt_completion_text_read_hook` and `chat_read_hook` are the finetuning mode's (gptx_cli/data/finetune.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TEXT_HOOKS = ("text_read_hook",)
NLG_HOOKS = ("nlg_read_hook",)
FINETUNING_HOOKS = ("prompt_completion_text_read_hook", "chat_read_hook")
# ModelZoo hooks for models gptx does not train (images, DPO pairs, embeddings, ...).
UNSUPPORTED_HOOKS = {
    "finetuning_llava_hook": "multimodal (LLaVA) data",
    "pretraining_image_captions_hook": "multimodal (image caption) data",
    "dpo_read_hook": "DPO preference pairs",
    "prompt_completion_chat_read_hook": "chat-template finetuning with images",
    "finetuning_image_captions_hook": "multimodal (image caption) data",
    "multimodal_finetuning_hook": "multimodal data",
    "fim_read_hook": "fill-in-the-middle data",
}


def wikitext_detokenizer(string: str) -> str:
    """ModelZoo's (and Megatron's) detokenizer for WikiText's tokenised text, rule for rule."""
    # contractions
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    # number separators
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    # punctuation
    string = string.replace(" : ", ": ")
    string = string.replace(" ; ", "; ")
    string = string.replace(" . ", ". ")
    string = string.replace(" ! ", "! ")
    string = string.replace(" ? ", "? ")
    string = string.replace(" , ", ", ")
    # double brackets
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    # miscellaneous
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    string = string.replace(" 's", "'s")
    return string


@dataclass(frozen=True)
class TextCleaning:
    """What happens to a document's text before tokenising (picklable: it travels to the workers).

    `strip`: text_read_hook's `.strip()`. `lines`: a `.txt` file is one document per line (ModelZoo's
    v2 reader reads `.txt` with the `datasets` text builder) instead of one per file."""

    strip: bool = False
    use_ftfy: bool = False
    ftfy_normalizer: str | None = "NFC"
    wikitext_detokenize: bool = False
    lines: bool = False

    @property
    def active(self) -> bool:
        return self.strip or self.use_ftfy or self.wikitext_detokenize or self.lines

    def clean(self, text: str) -> str:
        if self.strip:
            text = text.strip()
        return self.normalize(text)

    def normalize(self, text: str) -> str:
        """What follows the read hook: ftfy, wikitext detokenizing (ModelZoo's utils.py: clean_text)."""
        if self.use_ftfy:
            import ftfy

            text = ftfy.fix_text(text, normalization=self.ftfy_normalizer)
        if self.wikitext_detokenize:
            text = wikitext_detokenizer(text)
        return text

    def apply(
        self, texts: list[str], kind: str, chunk_bytes: int | None = None, sizes: list[int] | None = None
    ) -> tuple[list[str], int, tuple[int, int], TextCounts]:
        """(cleaned non-empty texts, number that came out empty, (records cut, documents they gave),
        the texts' sizes as ModelZoo counts them).

        `chunk_bytes`: a record (a line of a `.txt` file) of more UTF-8 bytes is first cut into
        documents as ModelZoo v2's reader does (`split_by_read_chunk_size`). `sizes`, when given, gets
        the UTF-8 bytes of each kept text as read, before clean-up (the size ModelZoo's reader counts
        towards a read chunk, data/vsl.py)."""
        if kind == "text" and self.lines:
            texts = [line for t in texts for line in t.splitlines()]
        records_cut = pieces = 0
        if chunk_bytes is not None:
            split: list[str] = []
            for t in texts:
                parts = split_by_read_chunk_size(t, chunk_bytes)
                if len(parts) > 1:
                    records_cut, pieces = records_cut + 1, pieces + len(parts)
                split += parts
            texts = split
        out: list[str] = []
        empty = 0
        counts = TextCounts()
        for read in texts:
            t = read.strip() if self.strip else read
            raw = t
            t = self.normalize(t)
            if raw:  # ModelZoo skips an empty region before counting it
                counts.add(raw, t)
            if t:
                out.append(t)
                if sizes is not None:
                    sizes.append(len(read.encode("utf-8")))
            else:
                empty += 1
        return out, empty, (records_cut, pieces), counts


@dataclass
class TextCounts:
    """ModelZoo's raw_* / normalized_* counts (pretraining_token_generator.py: parse_semantic_data_array):
    characters and UTF-8 bytes of each text after the read hook (raw) and after clean_text (normalized)."""

    raw_chars_count: int = 0
    raw_bytes_count: int = 0
    normalized_chars_count: int = 0
    normalized_bytes_count: int = 0

    def add(self, raw: str, normalized: str) -> None:
        self.raw_chars_count += len(raw)
        self.raw_bytes_count += len(raw.encode("utf-8"))
        self.normalized_chars_count += len(normalized)
        self.normalized_bytes_count += len(normalized.encode("utf-8"))

    @classmethod
    def of(cls, texts: list[str]) -> TextCounts:
        """Texts used as they are (no cleaning): raw = normalized."""
        c = cls()
        for t in texts:
            c.add(t, t)
        return c


def _last_paragraph_or_sentence_end(buffer: str) -> int | None:
    """ModelZoo's find_last_paragraph_or_sentence_end: just after the last '\\n\\n', else just after the
    last '.', '!' or '?', else None."""
    para = buffer.rfind("\n\n")
    if para != -1:
        return para + 2
    ends = [buffer.rfind(c) for c in ".!?"]
    last = max(ends)
    return last + 1 if last != -1 else None


def split_by_read_chunk_size(text: str, chunk_bytes: int) -> list[str]:
    """ModelZoo v2's reader (data_reader.py: Reader.accumulate_and_yield,
    split_entry_by_paragraph_or_sentence), rule for rule: a one-field record of more than `chunk_bytes`
    UTF-8 bytes (read_chunk_size KiB) is cut at the last paragraph or sentence end within its first
    `chunk_bytes` characters, else after them, again and again; each piece is a document of its own.

    As in ModelZoo the size left is counted in bytes but decreased by the characters cut off, so a text
    with multi-byte characters is cut while that count stays over `chunk_bytes` (empty pieces included:
    they are no documents)."""
    size = len(text.encode("utf-8"))
    if size <= chunk_bytes:
        return [text]
    pieces = []
    while size > chunk_bytes:
        end = _last_paragraph_or_sentence_end(text[:chunk_bytes])
        cut = end if end else chunk_bytes
        pieces.append(text[:cut])
        text, size = text[cut:], size - cut
    if text:
        pieces.append(text)
    return pieces
