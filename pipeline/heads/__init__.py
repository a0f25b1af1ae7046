"""Heads on cached embeddings: estimators and their backends (cuML, sklearnex, sklearn), k-fold fitting, the
MLP head, stored heads, and the head stage. Imports plumbing, data, models (the MLP module) and cache."""
