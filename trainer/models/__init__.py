"""Model kinds. Every kind implements :class:`trainer.models.base.Recommender`.

Importing this package registers every kind (the registry in :mod:`trainer.models.base`).
"""

from trainer.models import als, bpmf, gravity, mf, sequence, softmax  # noqa: F401  (registers the kinds)
