"""Measuring a config: `inspect` (parameters, FLOPs, memory; nothing allocated) and `bench`
(steady-state speed of the train step or the sampler)."""
