"""Metrics that score maps: localisation against masks, faithfulness by perturbation, sanity by randomisation.

A layer beside ``attributors``: metrics see maps, masks and a :class:`~.base.Context` through
which every model call goes (the api layer builds it on the engine), and import only ``core``.
"""
