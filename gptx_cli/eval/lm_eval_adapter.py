"""gptx as an EleutherAI lm-evaluation-harness model (optional: only when `lm_eval` is installed).

    import lm_eval
    from gptx_cli.eval.lm_eval_adapter import register
    register()  # adds model type "gptx" to lm_eval's registry
    lm_eval.simple_evaluate(model="gptx", model_args="checkpoint=model_dir/checkpoint_100", tasks=["hellaswag"])

`lm_eval` is imported only inside `register()`, so gptx neither needs nor imports it otherwise. The class
is a thin shell over the scorer `gptx eval --tasks` uses (`gptx_cli.eval.tasks`) and over
`gptx_cli.eval.generate`, so harness tasks and local task files are scored by the same code.
lm_eval is not installed in gptx's environment; tests/eval/test_eval_lm_eval_parity.py (skipped without
it) checks this class against the harness's own HFLM on the same weights: loglikelihood, rolling
loglikelihood and generate_until agree (checked with lm_eval 0.4.13).
"""

from __future__ import annotations

from typing import Any

_registered: dict[str, Any] = {}


def register(name: str = "gptx") -> Any:
    """Register (once) and return the lm_eval model class for gptx checkpoints."""
    if name in _registered:
        return _registered[name]
    try:
        from lm_eval.api.model import LM
        from lm_eval.api.registry import register_model
    except ImportError as err:
        from gptx_cli.errors import UsageError

        raise UsageError("lm-eval is not installed", hint="pip install lm-eval") from err

    from gptx_cli.checkpoint import resolve
    from gptx_cli.eval.evaluate import resolve_device, resolve_dtype, resolve_tokenizer
    from gptx_cli.eval.generate import CachedDecoder, SamplingConfig, generate
    from gptx_cli.eval.tasks import LoglikelihoodScorer, encode_pair

    class GptxLM(LM):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            checkpoint: str,
            tokenizer: str | None = None,
            device: str = "auto",
            dtype: str = "float32",
            batch_size: int | str = 8,
            max_length: int | None = None,
            **_: Any,
        ) -> None:
            super().__init__()
            self._device = resolve_device(device)
            source = resolve(checkpoint)
            self.model = source.load_model(self._device, resolve_dtype(dtype))
            self.tokenizer = resolve_tokenizer(source, tokenizer)
            self.max_length = int(max_length or self.model.cfg.max_position_embeddings)
            size = 8 if str(batch_size).startswith("auto") else int(batch_size)
            self.scorer = LoglikelihoodScorer(self.model, self.max_length, size, self._device)

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            pairs = [
                encode_pair(self.tokenizer, context, continuation, self.tokenizer.eos_id)
                for context, continuation in (r.args for r in requests)
            ]
            return self.scorer.loglikelihood_tokens(pairs)

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
            docs = [self.tokenizer.encode(r.args[0]) for r in requests]
            return self.scorer.loglikelihood_rolling(docs, self.tokenizer.eos_id)

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
            outputs = []
            for request in requests:
                context, gen_kwargs = request.args
                until = gen_kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                prompt = self.tokenizer.encode(context)
                max_new = int(gen_kwargs.get("max_gen_toks", 256))
                prompt = prompt[-(self.max_length - max_new) :] if max_new < self.max_length else prompt[-1:]
                max_new = min(max_new, self.max_length - len(prompt))
                temperature = float(gen_kwargs.get("temperature", 0.0) or 0.0)
                cfg = SamplingConfig(
                    max_new_tokens=max_new,
                    do_sample=bool(gen_kwargs.get("do_sample", False)) and temperature > 0,
                    temperature=temperature if temperature > 0 else 1.0,
                    top_k=gen_kwargs.get("top_k"),
                    top_p=gen_kwargs.get("top_p"),
                    seed=gen_kwargs.get("seed", 1234),
                    stop=tuple(until),
                    eos_id=self.tokenizer.eos_id,
                )
                decoder = CachedDecoder(self.model, len(prompt) + max_new)
                outputs.append(generate(decoder, self.tokenizer, prompt, cfg).text)
            return outputs

    _registered[name] = register_model(name)(GptxLM)
    return _registered[name]
