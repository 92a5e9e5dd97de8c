"""sbc: a session border controller on Twisted."""

__version__ = "0.1.0"
__all__ = ["__version__"]
