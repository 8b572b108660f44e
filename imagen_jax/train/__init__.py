"""Training one stage: state, optimizers, the jitted step, checkpoints, metrics, the loop."""
