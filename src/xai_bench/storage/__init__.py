"""Storage: results as labelled ``xarray.Dataset`` objects (dense and slot target layouts) and their zarr stores.

Owns the data model (dims, coordinates, the per-sample chunking) and every write to disk.
May import ``xai_bench.core`` only.
"""
