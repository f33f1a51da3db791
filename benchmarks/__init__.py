"""Speed measurements (``python -m benchmarks.<name>``); tests never assert timings."""
