"""jaxdarts throughput benchmarks: one module per section, driven by ``run_all.py``."""
