"""movierec trainer: from raw ratings to versioned artifacts the service can load.

Importing this package is cheap and torch-free; torch is imported by the modules that train.
"""
