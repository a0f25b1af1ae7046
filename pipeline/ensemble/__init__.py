"""Blending and scoring: ensemble weights fit on valid/OOF rows, the cross-fitted check, test metrics and the
DVC plots. Reads prediction files only; imports plumbing and data, never torch."""
