"""Snapshots of Hugging Face hub repositories, downloaded only when a user names a hub id, with
errors that say what to do (gated, not found, offline)."""

from __future__ import annotations

import logging
import os
import pathlib
import re
from collections.abc import Callable, Sequence

from imagen_jax.errors import AccessDenied, MissingPath, Unreachable, short_error

log = logging.getLogger(__name__)

# The hub's repository ids: owner/name of letters, digits, "-", "_" and ".", at most 96 long.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_repo_id(name: str) -> bool:
  """Whether `name` is read as a hub repository rather than a local path.

  Args:
    name: a string or path a user gave for a model.

  Returns:
    True for owner/name (such as DeepFloyd/IF-I-XL-v1.0) that is not a path that exists, does
    not start like one (".", "/", "~") and is not a URL. A bare name is a path (a missing
    folder, not a download).
  """
  name = str(name)
  if "://" in name or name.startswith((".", "/", "~")):
    return False
  if pathlib.Path(os.path.expanduser(name)).exists():
    return False
  return len(name) <= 96 and _REPO_ID.fullmatch(name) is not None and ".." not in name


def snapshot(repo_id: str, files: Sequence[str] | Callable[[str], Sequence[str]]) -> pathlib.Path:
  """Downloads what is missing of a hub repository's files and returns the local snapshot.

  Args:
    repo_id: owner/name on the Hugging Face hub.
    files: patterns of the files to fetch, or a function of the id that lists the repository
      to choose them (which needs the hub).

  Returns:
    The snapshot's local folder; when the hub cannot be reached, the snapshot already in the
    local cache, as it is (with a warning).

  Raises:
    AccessDenied: a gated repository whose license the logged-in account has not accepted.
    MissingPath: a repository not on the hub (or private, and not logged in).
    Unreachable: the hub cannot be reached and its cache holds no copy.
  """
  import huggingface_hub
  from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
  )

  try:
    patterns = list(files(repo_id) if callable(files) else files)
    log.info("downloading %s (%s) from the Hugging Face hub", repo_id, ", ".join(patterns))
    return pathlib.Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=patterns))
  except GatedRepoError as e:  # before its base class, RepositoryNotFoundError
    raise AccessDenied(
      f"{repo_id} is gated: accept its license on https://huggingface.co/{repo_id} with your "
      "account, then log in here (`hf auth login`, or set HF_TOKEN)."
    ) from e
  except RepositoryNotFoundError as e:
    raise MissingPath(
      f"{repo_id} is not a local folder and was not found on the hub (if it is a private or "
      "gated repository, log in first: `hf auth login`)."
    ) from e
  except LocalEntryNotFoundError as e:  # offline (HF_HUB_OFFLINE=1), and not in the cache
    unreachable = e
  except (FileNotFoundError, ValueError):  # what `files` says about the repository
    raise
  except Exception as e:  # the hub unreachable: its HTTP client's own errors
    unreachable = e
  try:
    cached = huggingface_hub.snapshot_download(repo_id, local_files_only=True)
  except LocalEntryNotFoundError:
    raise Unreachable(
      f"{repo_id} is not a local folder, nor in the hub cache, and the hub cannot be reached "
      f"({short_error(unreachable, 120)}): download it where there is a network (offline "
      "hosts: HF_HUB_OFFLINE=1 reads the cache), or pass a folder."
    ) from unreachable
  log.warning(
    "the hub cannot be reached (%s); using the cached snapshot of %s",
    short_error(unreachable, 120),
    repo_id,
  )
  return pathlib.Path(cached)
