"""gptx as an EleutherAI lm-evaluation-harness model (optional: only when `lm_eval` is installed, the
`gptx[lm-eval]` extra), and `gptx lm-eval`, which runs the harness's own command line on it.

    import lm_eval
    from gptx_cli.eval.lm_eval_adapter import register
    register()  # adds model type "gptx" to lm_eval's registry
    lm_eval.simple_evaluate(model="gptx", model_args="checkpoint=model_dir/checkpoint_100", tasks=["hellaswag"])

`lm_eval` is imported only inside `register()`, so gptx neither needs nor imports it otherwise. The class
is a thin shell over the code `gptx eval --tasks` uses: `gptx_cli.eval.tasks.LoglikelihoodScorer` for
loglikelihood and loglikelihood_rolling, `gptx_cli.eval.generate.BatchGenerator` (left-padded batches)
for generate_until, and `gptx_cli.eval.harness.HarnessTokenizer` for HFLM's tokenizer calls and prefix
token. tests/eval/test_eval_lm_eval_parity.py checks it against the harness's own `hf` model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gptx_cli.checkpoint import resolve
from gptx_cli.config.flags import COUNT, NON_NEGATIVE, POSITIVE, check_number
from gptx_cli.errors import DataError, GptxError, UsageError
from gptx_cli.eval.evaluate import context_length
from gptx_cli.eval.generate import BatchGenerator
from gptx_cli.eval.harness import HarnessTokenizer
from gptx_cli.eval.scorer import LoglikelihoodScorer, encode_pair
from gptx_cli.eval.source import resolve_device, resolve_dtype, resolve_tokenizer
from gptx_cli.fsutil import check_output

_registered: dict[str, Any] = {}
INSTALL_HINT = "pip install 'gptx[lm-eval]'"


def _import_lm_eval() -> Any:
    try:
        import lm_eval
        from lm_eval.api.model import LM  # noqa: F401
    except ImportError as err:
        raise UsageError(f"lm-eval is not installed ({err})", hint=INSTALL_HINT) from None
    return lm_eval


def detect_batch_size(model: Any, max_length: int, device: Any, start: int = 64) -> int:
    """The largest power-of-two batch (<= start) whose [batch, max_length] forward fits in memory (what
    HFLM's batch_size=auto searches for); on the CPU nothing runs out, so it is `start`."""
    import torch

    bs = start
    while bs >= 1:
        try:
            with torch.inference_mode():
                hidden = model.hidden_states(torch.zeros((bs, max_length), dtype=torch.long, device=device))
                model.logits(hidden[:, -1:])
            return bs
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            bs //= 2
    raise UsageError(f"batch_size auto: not even one sequence of {max_length} tokens fits in memory")


def register(name: str = "gptx") -> Any:
    """Register (once) and return the lm_eval model class for gptx checkpoints."""
    if name in _registered:
        return _registered[name]
    _import_lm_eval()
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model

    class GptxLM(LM):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            checkpoint: str,
            tokenizer: str | None = None,
            device: str = "auto",
            dtype: str = "float32",
            batch_size: int | str = 8,
            max_length: int | None = None,
            prefix_token_id: int | None = None,
            max_batch_size: int = 64,
            model: str | None = None,  # the run's name in the harness's results (`gptx lm-eval` sets it)
            **kwargs: Any,
        ) -> None:
            super().__init__()
            unknown = {k: v for k, v in kwargs.items() if v is not None}
            if unknown:
                raise UsageError(
                    f"model_args: unknown key(s) for gptx: {', '.join(sorted(unknown))}",
                    hint="checkpoint, tokenizer, device, dtype, batch_size, max_length, prefix_token_id",
                )
            self._device = resolve_device(device)
            source = resolve(checkpoint)
            self.name = model or source.directory.resolve().name
            self.model = source.load_model(self._device, resolve_dtype(dtype))
            prefix = None if prefix_token_id is None else int(prefix_token_id)
            self.tok = HarnessTokenizer(resolve_tokenizer(source, tokenizer), prefix)
            self.max_length = int(max_length or self.model.cfg.max_position_embeddings)
            if str(batch_size).startswith("auto"):
                size = detect_batch_size(self.model, self.max_length, self._device, int(max_batch_size))
            else:
                size = int(batch_size)
            self.batch_size_resolved = size
            self.scorer = LoglikelihoodScorer(self.model, self.max_length, size, self._device)
            self.scorer.ids_from = f"tokenizer {getattr(self.tok.tok, 'name', '')}".strip()
            self.generator = BatchGenerator(self.model, self.tok, self.max_length, size)

        @property
        def prefix_token_id(self) -> int:
            return self.tok.prefix_token

        @property
        def eot_token_id(self) -> int | None:
            return self.tok.eos_id

        def tok_encode(self, string: str, **_: Any) -> list[int]:
            return self.tok.encode(string)

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            pairs = [
                encode_pair(self.tok, context, continuation, self.tok.prefix_token)
                for context, continuation in (r.args for r in requests)
            ]
            return self.scorer.loglikelihood_tokens(pairs)

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
            docs = [self.tok.encode(r.args[0]) for r in requests]
            return self.scorer.loglikelihood_rolling(docs, self.tok.prefix_token)

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
            return generate_until_requests(self.generator, requests)

    _registered[name] = register_model(name)(GptxLM)
    return _registered[name]


def generate_until_requests(generator: BatchGenerator, requests: Sequence[Any]) -> list[str]:
    """HFLM.generate_until on gptx's BatchGenerator: requests with the same generation arguments run
    together (HFLM groups by gen_kwargs); sampling is refused (greedy only)."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(repr(sorted(r.args[1].items())), []).append(i)
    out = [""] * len(requests)
    for idx in groups.values():
        gen_kwargs = dict(requests[idx[0]].args[1])
        if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature", 0.0) or 0.0) > 0:
            raise UsageError("gptx's lm-eval model decodes greedily; this task asks for sampling")
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        max_gen = int(
            gen_kwargs.get("max_gen_toks")
            or gen_kwargs.get("max_new_tokens")
            or gen_kwargs.get("max_tokens")
            or 256
        )
        texts = generator.generate_until([requests[i].args[0] for i in idx], until, max_gen)
        for i, text in zip(idx, texts, strict=True):
            out[i] = text
    return out


# ---------------------------------------------------------------------------------------------------
# `gptx lm-eval`

_GPTX_OWNS = ("--model", "--model_args", "--model-args")


def run_lm_eval(
    checkpoint: str,
    harness_args: Sequence[str],
    *,
    tokenizer: str | None = None,
    dtype: str = "float32",
    max_length: int | None = None,
    extrapolate: bool = False,
    online: bool = False,
) -> None:
    """Run the harness's command line (`lm-eval run ...`) with `--model gptx` on `checkpoint` (a gptx
    checkpoint, a model_dir or a Hugging Face directory); every other argument (--tasks, --num_fewshot,
    --limit, --batch_size, --device, --log_samples, --output_path, --include_path, ...) passes through,
    checked first (`check_harness_args`). The run is named as the checkpoint directory (the output
    subdirectory and `model_name` in results.json), and a run whose results were not saved fails."""
    for arg in harness_args:
        if arg.split("=", 1)[0] in _GPTX_OWNS:
            raise UsageError(f"{arg.split('=', 1)[0]}: gptx lm-eval sets the model; give --checkpoint-path")
    _import_lm_eval()
    if not online:  # no hub downloads unless asked for: local task YAMLs and cached datasets only
        for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.setdefault(var, "1")
    source = resolve(checkpoint)  # a clear error for a path that is not a checkpoint
    context_length(max_length, source.config.max_position_embeddings, extrapolate)
    name = source.directory.resolve().name
    register()
    from lm_eval._cli import HarnessCLI

    model_args = [f"model={name}", f"checkpoint={checkpoint}", f"dtype={dtype}"]
    if tokenizer:
        model_args.append(f"tokenizer={tokenizer}")
    if max_length:
        model_args.append(f"max_length={max_length}")
    for value in model_args:
        if "," in value or "=" in value.split("=", 1)[1]:
            raise UsageError(
                f"{value.split('=', 1)[0]}: a path with ',' or '=' cannot pass through --model_args"
            )
    cli = HarnessCLI()
    args = cli._parser.parse_args(
        ["run", "--model", "gptx", "--model_args", ",".join(model_args), *harness_args]
    )
    check_harness_args(args)
    started = time.time()
    try:
        cli.execute(args)
    except GptxError:
        raise
    except Exception as err:
        raise _harness_error(err) from err
    _check_saved(args.output_path, name, started)


def check_harness_args(args: Any) -> None:
    """The harness's arguments in gptx's words, before it starts: numbers in range, --device defaulting to
    what the machine has (the harness's own default is cuda), --output_path writable, local task YAMLs
    and their JSONL data readable (file:line)."""
    check_number("--limit", args.limit, POSITIVE)
    check_number("--num_fewshot", args.num_fewshot, NON_NEGATIVE)
    check_number("--max_batch_size", args.max_batch_size, COUNT)
    if args.limit is not None and args.limit >= 1 and args.limit != int(args.limit):
        raise UsageError(f"--limit {args.limit}: a count must be whole (a fraction must be below 1.0)")
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.output_path:
        path = Path(args.output_path)
        check_output(path, what="--output_path", kind="file" if path.suffix == ".json" else "dir")
    elif getattr(args, "log_samples", False):
        raise UsageError("--log_samples needs --output_path (where the samples go)")
    if args.include_path:
        for yaml_file in sorted(Path(args.include_path).rglob("*.yaml")):
            _check_task_yaml(yaml_file)


def _check_task_yaml(path: Path) -> None:
    """A local task YAML that the harness would skip ("Tasks not found") or whose JSONL data would fail
    deep in `datasets` (DatasetGenerationError): the file and line instead."""
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        cfg = load_yaml(path, resolve_func=False)
    except Exception as err:  # yaml.YAMLError and the loader's ValueError
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise DataError(f"{where}: not a valid task YAML ({problem})") from None
    kwargs = cfg.get("dataset_kwargs") if cfg.get("dataset_path") == "json" else None
    files = kwargs.get("data_files") if isinstance(kwargs, dict) else None
    if isinstance(files, str):
        files = [files]
    for data in files.values() if isinstance(files, dict) else files or []:
        for f in [data] if isinstance(data, str) else data:
            _check_jsonl(path.parent / f)


def _check_jsonl(path: Path) -> None:
    import json

    if not path.is_file():
        return  # the harness names a missing file itself
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                json.loads(raw)
            except ValueError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err})") from None


def _harness_error(err: Exception) -> GptxError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    name = type(err).__name__
    offline = any(
        s in f"{name} {text}".lower() for s in ("offline", "connection", "couldn't reach", "resolve", "hub")
    )
    if offline:
        return DataError(
            f"lm-eval could not load a task's dataset offline: {name}: {text}",
            hint="use a local task YAML (--include_path) or pass --online to let the harness download",
        )
    return DataError(f"lm-eval failed: {name}: {text}")


def _check_saved(output_path: str | None, name: str, started: float) -> None:
    """The harness logs a failed save and goes on: here it fails the run."""
    if not output_path:
        return
    path = Path(output_path)
    if path.suffix == ".json":
        written = list(path.parent.glob(f"{path.stem}_*.json"))
    else:
        written = list((path / sanitize(name)).glob("results_*.json"))
    if not any(p.stat().st_mtime >= started - 1 for p in written):
        raise DataError(f"lm-eval did not save its results to --output_path {output_path}")


def sanitize(name: str) -> str:
    """lm_eval.utils.sanitize_model_name: the output subdirectory of a run named `name`."""
    from lm_eval.utils import sanitize_model_name

    return str(sanitize_model_name(name))
