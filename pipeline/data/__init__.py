"""Data: reading the user's table or files, cleaning, duplicates and splits, the task (labels <-> targets),
tokenized batches and image inputs. Imports only the top-level plumbing (params, paths, io); torch only in
batching and images, which the head stages never load."""
