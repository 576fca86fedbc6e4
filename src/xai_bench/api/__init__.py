"""The front doors: ``explain``, ``profile`` and what they share (argument checks, targets, layers).

May import the engine, the plugin registries, the methods' interfaces, storage and the foundation.
"""
