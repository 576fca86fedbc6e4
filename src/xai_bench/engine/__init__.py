"""The engine: one planner and one runner for every pass any method, profile or metric makes.

``planner`` turns (samples x expansion items) into passes of consecutive pairs; ``memory``
caps a pass by the budget; ``tuning`` picks, under that cap, the fastest measured pass size and
remembers it; ``runner`` feeds the passes and backs off on out-of-memory errors.
May import the methods' interfaces and the foundation.
"""
