from __future__ import annotations

from gptx_testing import run_gptx


def test_version_prints_package_version():
    res = run_gptx("--version")
    assert res.returncode == 0
    assert res.stdout.strip().startswith("gptx 0.")


def _modules_after(argv: list[str]) -> set[str]:
    """Run the CLI's main() in a fresh interpreter and return the names of the modules it imported."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        f"sys.argv = {['gptx', *argv]!r}\n"
        "from gptx_cli.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('\\nMODULES=' + json.dumps(sorted(sys.modules)))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    marker = res.stderr.rsplit("MODULES=", 1)
    assert len(marker) == 2, res.stderr
    return set(json.loads(marker[1]))


def test_help_does_not_import_torch():
    mods = _modules_after(["--help"])
    assert "gptx_cli.cli" in mods
    assert "torch" not in mods and "transformers" not in mods


def test_validate_config_with_summary_does_not_import_torch():
    from pathlib import Path

    configs = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    mods = _modules_after(["validate-config", "--summary", *configs])
    assert "gptx_cli.config.validate" in mods and "gptx_cli.model.counts" in mods  # it really ran
    assert "torch" not in mods and "transformers" not in mods and "numpy" not in mods
