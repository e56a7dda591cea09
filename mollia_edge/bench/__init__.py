"""Benchmarks run by ``mollia-edge bench``: quantization level against annotation quality."""
