"""seqify: which tokenization and which generation order make non-sequential data
easiest to model autoregressively.

The package root stays light (no torch import) so that the CLI answers fast; import
the parts you need, e.g. ``from seqify.bench import run_bench``.
"""

__version__ = "0.1.0"
