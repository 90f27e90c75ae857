"""Model kinds. Every kind implements :class:`trainer.models.base.Recommender`."""
