"""Stage 2's contract below the heads: what heads read (data), how tasks split, train and
score them (tasks, metrics, targets), windows over earlier posts (windows), the
small-data regime (regime) and the one shared torch training loop (loop)."""
