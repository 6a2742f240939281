"""Task-independent run machinery: typed config, checkpoints, the training loop, logs.

`config` (typed YAML), `checkpoint` (atomic, weights-only files), `schedule` (LR of the
iteration), `batches` (resumable batch streams), `log` (metrics.jsonl, progress bar) and
`loop` (the one loop that `train` and `search` both run).
"""
