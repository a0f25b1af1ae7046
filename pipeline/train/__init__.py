"""Training: the fine-tuning loop, its optimizers and schedules, and distributed (DDP) helpers. Imports plumbing,
data, models and cache (the prediction writer); nothing above it."""
