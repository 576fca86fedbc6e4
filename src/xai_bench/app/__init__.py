"""The application edge: the ``xai-bench`` command, the demo and the figures (matplotlib).

May import every layer below it; nothing inside the library imports it.
"""
