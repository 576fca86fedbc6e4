"""Plugins: the pluggy manager (built-ins by module name, then entry points) and the id -> class registries.

May import the methods' base classes, storage and the foundation; the manager never imports a method module
itself: built-ins are loaded by name, exactly as third-party entry points are.
"""
