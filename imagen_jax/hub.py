"""Snapshots of Hugging Face hub repositories, downloaded only when a user names a hub id, with
errors that say what to do (gated, not found, offline)."""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Callable, Sequence

from imagen_jax.errors import short_error

log = logging.getLogger(__name__)


def snapshot(repo_id: str, files: Sequence[str] | Callable[[str], Sequence[str]]) -> pathlib.Path:
  """The local snapshot of `repo_id` with `files`: patterns, or a function of the id that lists
  the repository to choose them (which needs the hub). When the hub cannot be reached, the
  snapshot already in the local cache, as it is."""
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
    raise PermissionError(
      f"{repo_id} is gated: accept its license on https://huggingface.co/{repo_id} with your "
      "account, then log in here (`hf auth login`, or set HF_TOKEN)."
    ) from e
  except RepositoryNotFoundError as e:
    raise FileNotFoundError(
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
    raise ConnectionError(
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
