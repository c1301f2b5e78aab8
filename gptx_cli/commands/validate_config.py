from __future__ import annotations

from gptx_cli.errors import NotImplementedYet


def validate_config_cmd() -> None:
    """Validate ModelZoo YAML configs."""
    raise NotImplementedYet("gptx validate-config")
