"""Paths a user gives: relative to the current directory, `~` expanded, URLs untouched.

orbax, TFDS and TensorBoard resolve relative paths differently (orbax refuses them), so every
path from the command line or a config is made absolute once, where it enters.
"""

from __future__ import annotations

import os
import re

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path) -> bool:
  """True for gs://, s3://, file:// and other scheme:// paths."""
  return bool(_URL.match(str(path)))


def absolute(path) -> str:
  """`path` as an absolute local path (from the current directory), or unchanged if a URL.
  "" stays "" (the configs' "not set")."""
  path = os.fspath(path)
  if not path or is_url(path):
    return path
  return os.path.abspath(os.path.expanduser(path))
