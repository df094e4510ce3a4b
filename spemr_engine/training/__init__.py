"""Training: reference sets (streamed, imported, cross-matched), training and evaluation."""
