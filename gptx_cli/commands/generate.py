"""`gptx generate`: text from a checkpoint, streamed as it is decoded (docs/generate.md)."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from gptx_cli.commands.options import CheckpointPath, Device, Dtype, NoVerify, Tokenizer, fields_of


def _read_prompt(prompt: str | None, prompt_file: str | None) -> str:
    """--prompt verbatim; a file or stdin loses one trailing newline (the one `echo` and editors add)."""
    from gptx_cli.errors import UsageError

    if prompt is not None and prompt_file is not None:
        raise UsageError("give --prompt or --prompt-file, not both")
    if prompt is not None:
        return prompt
    if prompt_file is not None:
        if prompt_file == "-":
            return _strip_newline(_read_stdin())
        try:
            with open(prompt_file, encoding="utf-8") as f:
                return _strip_newline(f.read())
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"cannot read --prompt-file {prompt_file}: {err}") from err
    if sys.stdin.isatty():
        raise UsageError("no prompt: pass --prompt TEXT, --prompt-file PATH, or pipe text on stdin")
    return _strip_newline(_read_stdin())


def _read_stdin() -> str:
    from gptx_cli.errors import UsageError

    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(
            f"the prompt on stdin is not UTF-8 text (byte {err.start} is 0x{data[err.start]:02x})"
        ) from None


def _strip_newline(text: str) -> str:
    return text[:-1] if text.endswith("\n") else text


def generate_cmd(
    checkpoint_path: CheckpointPath,
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="The prompt text."),
    prompt_file: Optional[str] = typer.Option(
        None, "--prompt-file", "--prompt_file", help="Read the prompt from a file ('-' for stdin)."
    ),
    prompts_file: Optional[str] = typer.Option(
        None,
        "--prompts-file",
        "--prompts_file",
        help='Many prompts: one per line (.jsonl: {"prompt": ...}); JSON lines out, batched.',
    ),
    batch_size: int = typer.Option(
        8, "--batch-size", "--batch_size", help="Prompts decoded together with --prompts-file."
    ),
    max_new_tokens: int = typer.Option(
        64, "--max-new-tokens", "--max_new_tokens", help="Tokens to generate at most."
    ),
    greedy: bool = typer.Option(
        False, "--greedy", help="Argmax decoding (the default unless sampling is asked for)."
    ),
    sample: bool = typer.Option(
        False, "--sample", help="Sample (implied by --temperature > 0, --top-k, --top-p)."
    ),
    temperature: Optional[float] = typer.Option(
        None, "--temperature", help="Sampling temperature; 0 means greedy."
    ),
    top_k: Optional[int] = typer.Option(
        None, "--top-k", "--top_k", help="Sample among the k likeliest tokens."
    ),
    top_p: Optional[float] = typer.Option(
        None, "--top-p", "--top_p", help="Sample from the smallest set of tokens with probability >= p."
    ),
    repetition_penalty: float = typer.Option(
        1.0, "--repetition-penalty", "--repetition_penalty", help="> 1 discourages tokens already present."
    ),
    stop: Optional[list[str]] = typer.Option(None, "--stop", help="Stop before this text (repeatable)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for sampling: same seed, same text."),
    ignore_eos: bool = typer.Option(False, "--ignore-eos", help="Keep going past the end-of-text token."),
    tokenizer: Tokenizer = None,
    device: Device = "auto",
    dtype: Dtype = "float32",
    echo: bool = typer.Option(False, "--echo", help="Print the prompt before the generated text."),
    output_format: str = typer.Option(
        "text", "--format", help="text (streamed), or json (prompt and generated token ids and text)."
    ),
    no_verify: NoVerify = False,
) -> None:
    """Generate text after a prompt: greedy, or sampled with temperature / top-k / top-p, using the KV cache.

    Example: gptx generate --checkpoint-path model_dir/demo_neox --prompt "Return a new list of" --top-k 40
    """
    from gptx_cli.checksum import skip_verification

    skip_verification(no_verify)
    from gptx_cli.errors import UsageError

    if output_format not in ("text", "json"):
        raise UsageError(f"--format must be text or json, got {output_format!r}")
    from gptx_cli.eval.sampling import SamplingConfig

    sampling = SamplingConfig.from_flags(
        max_new_tokens=max_new_tokens,
        greedy=greedy,
        sample=sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        seed=seed,
        stop=stop or (),
    )
    if prompts_file is not None and (prompt is not None or prompt_file is not None or echo):
        raise UsageError("--prompts-file cannot be combined with --prompt, --prompt-file or --echo")
    text = _read_prompt(prompt, prompt_file) if prompts_file is None else ""
    # torch from here on: the checks above answer a mistyped flag in a fraction of a second
    from gptx_cli.eval.generate import GenerateOptions, generate_from_checkpoint, stream_to

    opts = GenerateOptions(**fields_of(GenerateOptions, locals(), prompt=text))
    if prompts_file is not None:
        from gptx_cli.eval.generate import generate_many_from_checkpoint, read_prompts_file

        prompts = read_prompts_file(prompts_file)
        for p, result in zip(prompts, generate_many_from_checkpoint(opts, prompts, batch_size), strict=True):
            typer.echo(json.dumps({"prompt": p, **result.to_dict()}, ensure_ascii=False))
        return
    if output_format == "json":
        result = generate_from_checkpoint(opts)
        typer.echo(json.dumps({"prompt": text, **result.to_dict()}, ensure_ascii=False))
        return
    write = stream_to(sys.stdout)
    echoed = not echo  # the prompt goes out with the first text, after the notes of opening the model

    def on_text(piece: str) -> None:
        nonlocal echoed
        if not echoed:
            write(text)
            echoed = True
        write(piece)

    generate_from_checkpoint(opts, on_text=on_text)
    if not echoed:  # nothing was generated (a stop sequence at once, or the end-of-text token)
        sys.stdout.write(text)
    sys.stdout.write("\n")
    sys.stdout.flush()
