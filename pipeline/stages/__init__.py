"""The frame path between decode and encode: stage objects (push(batch) / push(None) flushes / close()),
the threaded Pipeline that joins them, manual overrides, and the options that build the chain."""
