"""Tools beside the package: the transformers reference (hf_reference.py), the builders the tests and benchmarks
share (builders.py), the golden-fixture generator, checkpoint exporters and the benchmarks.

Run them from the repository root as modules, e.g. ``python -m tools.make_goldens``."""
