"""The man pages and shell completions, generated from the code they describe.

``btrsendd(8)`` and the completions are built from the argparse parser (``cli_model``), and
``btrsendd.toml(5)`` from the pydantic schema with the prose of the annotated example
configuration (``config_model``), so none of them can list a command, an option or a key the
program does not have, or miss one it has.  ``python -m btrsendd.docgen`` writes them; the
Makefile runs it for ``make install`` and ``make deb``.
"""
