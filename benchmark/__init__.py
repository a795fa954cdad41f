"""AFF/NFF multimodal benchmark harness: ``python -m benchmark --help``."""

__version__ = "0.1.0"
