"""Local attribution methods: the ``Attributor`` interface and the six built-ins.

Methods layer: may import ``xai_bench.core`` and ``xai_bench.surgery``; never the engine, which calls them.
"""
