"""Checkpoints of an unfinished training run, so that a long run can be stopped and resumed.

A checkpoint holds everything :func:`meanfield.train.train` needs to continue after a finished
epoch: the method's state, the minibatch and noise streams, what was recorded so far and the
training time. A run resumed from it draws the same minibatches and the same noise and computes the
same numbers as a run that was never stopped, so its result is bit for bit the same (only the
recorded wall times differ, as they do between any two runs).

The file is a pickle, written to a temporary name and renamed, so that a run killed while writing
leaves the previous checkpoint intact. Read checkpoints only from places you trust: loading a pickle
can run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

__all__ = ["CheckpointMismatch", "load_checkpoint", "remove_checkpoint", "save_checkpoint"]

# Raised when the layout of the saved payload changes; older checkpoints are then refused.
FORMAT = 1


class CheckpointMismatch(ValueError):
    """A checkpoint file belongs to another run (other method, sizes, epochs or seed)."""


def save_checkpoint(path: str | os.PathLike, identity: dict, payload: dict) -> None:
    """Write ``payload`` for the run described by ``identity`` to ``path``, atomically."""
    path = Path(path)
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "wb") as fh:
        pickle.dump({"format": FORMAT, "identity": identity, "payload": payload}, fh,
                    protocol=pickle.HIGHEST_PROTOCOL)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(partial, path)


def load_checkpoint(path: str | os.PathLike, identity: dict) -> dict | None:
    """The payload saved at ``path`` for the run ``identity``; None if there is no such file.

    Raises
    ------
    CheckpointMismatch
        If the file was written for another run, or by another checkpoint format.
    """
    path = Path(path)
    if not path.exists():
        return None
    with open(path, "rb") as fh:
        saved = pickle.load(fh)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise CheckpointMismatch(f"checkpoint {path} was not written by this version of meanfield; "
                                 "delete it to start the run afresh")
    if saved["identity"] != identity:
        differ = sorted(k for k in {*identity, *saved["identity"]}
                        if identity.get(k) != saved["identity"].get(k))
        raise CheckpointMismatch(f"checkpoint {path} belongs to another run (it differs in {', '.join(differ)}); "
                                 "delete it or choose another checkpoint path")
    return saved["payload"]


def remove_checkpoint(path: str | os.PathLike) -> None:
    """Delete the checkpoint at ``path`` and any temporary file left beside it."""
    path = Path(path)
    for stale in (path, path.with_name(path.name + ".tmp")):
        stale.unlink(missing_ok=True)
