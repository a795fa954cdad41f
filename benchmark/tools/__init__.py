"""Developer tools run as modules, e.g. ``python -m benchmark.tools.throughput``."""
