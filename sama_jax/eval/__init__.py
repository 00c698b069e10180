"""Evaluation on the synthetic world, where the true edited video is known."""
