"""Foundation: the error tree, the pluggy hook specifications, provenance and argument checks.

Imports nothing else of xai_bench; every other layer may import it.
"""
