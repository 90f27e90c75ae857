"""movierec: shared pieces of the trainer and the service (the artifact contract and the CLI)."""

__version__ = "0.1.0"
