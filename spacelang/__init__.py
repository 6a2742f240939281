"""spacelang: a language and toolchain for neural architecture search spaces."""

__version__ = "0.1.0"
