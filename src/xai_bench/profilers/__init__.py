"""Global profilers: the ``GlobalProfiler`` interface, neuron activation profiles and dead feature maps.

Methods layer: may import ``xai_bench.core`` only.
"""
