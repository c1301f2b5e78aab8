"""`python -m gptx_cli ...`: the `gptx` command without an installed entry point."""

from gptx_cli.cli import main

main()
