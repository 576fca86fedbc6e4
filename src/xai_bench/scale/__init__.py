"""Scale-out: ``run`` over whole data sets into resumable stores, on one machine or dask workers;
model factories and checkpoints; image folders as data sets.

May import the front doors and everything below them.
"""
