"""Models: text and image backbones, the classifier (encoder + MLP head), fine-tuning schemes, adapters and
the AutoFreeze policy. Imports plumbing and data, never train/cache/heads."""
