import sys

from imagen_jax.cli import main

sys.exit(main())
