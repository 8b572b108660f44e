"""Stage configs, installed with the package as `imagen_jax.configs`: the paper's stages
(base64.py, sr256.py, sr1024.py) and the tiny demo cascade (demo.py). Name one as
`--config demo:base` or by its path, `--config configs/demo.py:base`."""
