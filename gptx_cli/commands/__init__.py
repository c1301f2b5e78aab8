"""One module per subcommand. Modules import only typer at top level; the work is imported lazily."""
