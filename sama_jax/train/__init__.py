"""Training: optimizer and state, the jitted step, checkpoints and the loop."""
