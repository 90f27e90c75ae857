"""movierec service: the FastAPI app that serves the trainer's artifacts (built under issue 3).

It must never import torch; it reads artifacts through :mod:`movierec.artifacts`.
"""
