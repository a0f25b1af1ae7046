"""svmft: fast fine-tuning of transformers with cached embeddings and SVM heads.

The library behind the DVC stages: every stage in `stages/` is a thin wrapper around
functions here, so everything can be tested and reused without DVC.
"""

class PipelineError(Exception):
    """A user-facing error (bad params, bad data, missing artifact): printed as one line, exit code 2."""
