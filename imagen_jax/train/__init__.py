"""Training one stage: state, optimizers, the jitted step, ahead-of-time compilation, checkpoints
(the format's owner), metrics, sample grids, stop requests and the loop (`train_and_evaluate`)."""

__all__ = ["train_and_evaluate"]


def __getattr__(name):
  # Imported on first use: reading a checkpoint (train.checkpoint) needs none of the loop.
  if name == "train_and_evaluate":
    from imagen_jax.train.loop import train_and_evaluate

    return train_and_evaluate
  raise AttributeError(f"module 'imagen_jax.train' has no attribute {name!r}")
