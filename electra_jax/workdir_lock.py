"""One run per workdir: WORKDIR/lock names the run (host, pid) that uses the folder.

The run holds an exclusive `flock` on the file while it lives. The kernel drops the lock when the
process ends, however it ends (kill -9, out of memory), so a lock left by a dead run is simply taken
over: there is no stale state to clean up by hand. The file's content only serves the message a
second run gets; a clean exit empties it, so content without a holder means the last run was killed.
On a filesystem without flock the content decides: a live pid on this host holds the folder, a dead
one doesn't, another host's is refused (its pid can't be checked from here).

A job of several processes (jax.distributed) is one run: its process 0 takes the lock and tells the
others whether it got it, so all of them stop together when the folder is taken.

A remote folder (gs://...) has no flock and no atomic create-if-absent that TF's filesystem offers,
so there the lock is advisory: a live pid on this host still holds the folder, but another host's
lock is taken over with a warning (a preempted TPU VM's successor must resume; its old lock can't be
checked from here). Two runs on two hosts writing one remote workdir are not prevented.
"""
import contextlib
import errno
import fcntl
import json
import os
import socket
import time

import numpy as np

from electra_jax import paths
from electra_jax.errors import UserError

LOCK_FILE = 'lock'


def _describe(holder: dict) -> str:
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
          f"{holder.get('started', '?')}")


def _read(fd) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  try:
    holder = json.loads(os.read(fd, 4096) or b'{}')
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


def _pid_alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except (OSError, ValueError, TypeError) as e:
    return isinstance(e, PermissionError)  # exists, but belongs to another user
  return True


def _me() -> dict:
  return {'host': socket.gethostname(), 'pid': os.getpid(),
          'started': time.strftime('%Y-%m-%d %H:%M:%S')}


def _acquire_remote(directory: str, what: str, path: str) -> str:
  """The advisory lock of a remote folder (module docstring); returns its path."""
  try:
    with paths.open(path, 'rb') as f:
      holder = json.loads(f.read() or b'{}')
  except (*paths.error_types(), ValueError):
    holder = {}
  holder = holder if isinstance(holder, dict) else {}
  if holder.get('pid') not in (None, os.getpid()):
    if holder.get('host') == socket.gethostname() and _pid_alive(holder.get('pid')):
      raise UserError(f'{what} {directory} is in use by another run ({_describe(holder)}); wait '
                      f'for it to end or use another folder (the lock is {path})')
    print(f'taking over the lock of {what} {directory} from {_describe(holder)} (a remote folder '
          'has no flock: make sure that run is gone)', flush=True)
  try:
    with paths.open(path, 'wb') as f:
      f.write(json.dumps(_me()).encode() + b'\n')
  except paths.error_types() as e:
    raise UserError(f'cannot write to {what} {directory}: {e}') from None
  return path


def acquire(directory: str, what: str = 'workdir', name: str = LOCK_FILE):
  """Takes DIRECTORY/NAME or raises a UserError naming its holder; returns the file descriptor
  (for a remote folder, the lock file's path)."""
  path = paths.join(directory, name)
  if paths.is_url(path):
    return _acquire_remote(directory, what, path)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise UserError(f'cannot write to {what} {directory}: {e.strerror}') from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    holder = _read(fd)
    held = e.errno in (errno.EAGAIN, errno.EACCES) or (  # else no flock here: judge by the content
        holder.get('host') not in (None, socket.gethostname()) or
        (holder.get('pid') not in (None, os.getpid()) and _pid_alive(holder.get('pid'))))
    if held:
      os.close(fd)
      raise UserError(f'{what} {directory} is in use by another run ({_describe(holder)}); wait '
                      f'for it to end or use another folder (the lock is {path})') from None
  holder = _read(fd)  # ours now; what a run that ended cleanly leaves is empty
  if holder.get('pid') not in (None, os.getpid()):
    print(f'taking over the lock of {what} {directory} from a run that is gone '
          f'({_describe(holder)})', flush=True)
  os.ftruncate(fd, 0)
  os.pwrite(fd, json.dumps(_me()).encode() + b'\n', 0)
  return fd


def release(fd):
  """Empties the lock file (a clean end) and drops the lock."""
  if isinstance(fd, str):  # a remote folder's lock file
    try:
      paths.open(fd, 'wb').close()
    except paths.error_types():
      pass
    return
  try:
    os.ftruncate(fd, 0)
  except OSError:
    pass  # e.g. the disk is full or gone: the lock still goes with the descriptor
  os.close(fd)


@contextlib.contextmanager
def hold(directory: str, what: str = 'workdir'):
  """Holds DIRECTORY/lock for the `with` block; in a multi-process job only process 0 takes it."""
  import jax  # pylint: disable=g-import-not-at-top
  fd, error = None, None
  if jax.process_index() == 0:
    try:
      fd = acquire(directory, what)
    except UserError as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    taken = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not taken and error is None:
      error = UserError(f'process 0 could not take the lock of {what} {directory} (see its error)')
  if error is not None:
    raise error
  try:
    yield
  finally:
    if fd is not None:
      release(fd)
