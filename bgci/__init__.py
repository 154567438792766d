"""bgci: blue-green CI for Docker web apps."""

__version__ = "0.1.0"
