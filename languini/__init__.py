"""languini: a compute-matched benchmark harness for language-model research."""

__version__ = "0.1.0"
