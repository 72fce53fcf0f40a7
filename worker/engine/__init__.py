"""Provider-agnostic logic: what happens to an export at each step. No Celery, no provider code."""
