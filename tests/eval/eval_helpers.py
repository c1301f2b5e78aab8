"""Shared builders for the eval tests: tiny random transformers models and the GPT-2 tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch


class BpeTokenizer:
    """The shared GPT-2 BPE files through `tokenizers`, with the interface scoring needs."""

    def __init__(self, tokenizer_dir: Path):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        bpe = models.BPE.from_file(
            str(tokenizer_dir / "gpt2-encoder.json"), str(tokenizer_dir / "gpt2-vocab.bpe")
        )
        self._tok = Tokenizer(bpe)
        self._tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self._tok.decoder = decoders.ByteLevel()
        self.eos_id = 50256

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


def tiny_neox(vocab_size: int = 50257, max_positions: int = 64, seed: int = 0):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        rotary_pct=0.25,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        eos_token_id=50256,
        bos_token_id=50256,
    )
    model = GPTNeoXForCausalLM(cfg).eval()
    return model


def tiny_gptj(vocab_size: int = 50257, max_positions: int = 64, seed: int = 0):
    from transformers import GPTJConfig, GPTJForCausalLM

    torch.manual_seed(seed)
    cfg = GPTJConfig(
        vocab_size=vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=4,
        rotary_dim=4,
        n_positions=max_positions,
        eos_token_id=50256,
        bos_token_id=50256,
    )
    return GPTJForCausalLM(cfg).eval()


def hf_logits_fn(model):
    def logits_fn(input_ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids).logits

    return logits_fn


def hf_continuation_ll(model, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """The reference: one unpadded sequence through transformers, summing the continuation's log-probs."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logp = model(ids).logits[0, :-1].float().log_softmax(-1)
    n = len(continuation)
    target = torch.tensor(continuation)
    picked = logp[-n:].gather(-1, target[:, None]).sum().item()
    greedy = bool((logp[-n:].argmax(-1) == target).all())
    return picked, greedy


def run_gptx_with_stdin(stdin_text: str, *args: str):
    """Like conftest.run_gptx, with text piped to stdin."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "gptx_cli.cli", *args],
        input=stdin_text,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
