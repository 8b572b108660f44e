"""Data: TFDS builders (the procedural shapes set, folders of captioned images), the grain input
pipeline with SR crops, and the store of precomputed text embeddings."""
