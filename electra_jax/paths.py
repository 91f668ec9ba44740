"""Every file the framework reads or writes goes through here: local paths and URLs alike.

A URL (`gs://bucket/x`, or any scheme `tf.io.gfile` knows) goes to tf.io.gfile, the filesystem
that tf.data reads the shards with; a local path goes to os/open exactly as before, so local
behaviour does not change (and TensorFlow is not imported for it: it is slow to import).
Libraries that only take a local file (tokenizers, sentencepiece training, torch) get one from
`local_copy` / `local_output`. orbax takes URLs itself (tensorstore + etils.epath).
"""
import contextlib
import glob as glob_lib
import hashlib
import io
import os
import posixpath
import shutil
import socket
import sys
import tempfile

basename = os.path.basename
has_magic = glob_lib.has_magic


def is_url(path) -> bool:
  return '://' in str(path)


def join(path, *more) -> str:
  """os.path.join, where a URL among `more` starts afresh as an absolute path does."""
  for i in range(len(more) - 1, -1, -1):
    if is_url(more[i]):
      return os.path.join(*more[i:])
  return os.path.join(path, *more)


def _gfile():
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only for URLs: slow to import)
  return tf.io.gfile


def error_types() -> tuple:
  """What a failed file operation raises: OSError, and TensorFlow's errors once URLs were used
  (tf.errors.NotFoundError etc. are no OSError)."""
  if 'tensorflow' in sys.modules:
    return (OSError, sys.modules['tensorflow'].errors.OpError)
  return (OSError,)


def abspath(path: str) -> str:
  """os.path.abspath, but leaves URLs alone (abspath('gs://b/x') would be CWD/gs:/b/x)."""
  return path if is_url(path) else os.path.abspath(path)


def expanduser(path: str) -> str:
  return path if is_url(path) else os.path.expanduser(path)


def dirname(path: str) -> str:
  if is_url(path):
    scheme, rest = path.split('://', 1)
    return f'{scheme}://{posixpath.dirname(rest.rstrip("/"))}'
  return os.path.dirname(path)


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if is_url(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
  if is_url(path):
    return _gfile().exists(path) and not _gfile().isdir(path)
  return os.path.isfile(path)


def listdir(path: str) -> list[str]:
  if is_url(path):  # GCS lists a "directory" with a trailing slash
    return [n.rstrip('/') for n in _gfile().listdir(path)]
  return os.listdir(path)


def glob(pattern: str) -> list[str]:
  return _gfile().glob(pattern) if is_url(pattern) else glob_lib.glob(pattern)


def makedirs(path: str):
  """os.makedirs(path, exist_ok=True)."""
  if is_url(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def make_writable_dir(path: str, what: str):
  """Creates folder `path` if needed and writes and removes a probe file there, so that a folder
  that cannot be written is one error line (naming it as `what`) before any work starts."""
  from electra_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  if isfile(path):
    raise UserError(f'{what} {path} is a file, not a folder')
  try:
    makedirs(path)
    probe = join(path, f'.write-test-{socket.gethostname()}-{os.getpid()}')  # processes share it
    with open(probe, 'w') as f:
      f.write('ok')
    remove(probe)
  except error_types() as e:
    raise UserError(f'cannot write to {what} {path}: {getattr(e, "strerror", None) or e}'
                    ) from None


def remove(path: str):
  if is_url(path):
    _gfile().remove(path)
  else:
    os.remove(path)


def rmtree(path: str):
  """Removes a folder and what is in it; no error if it is not there."""
  if is_url(path):
    try:
      if _gfile().exists(path):
        _gfile().rmtree(path)
    except Exception:  # pylint: disable=broad-except  (like shutil's ignore_errors)
      pass
  else:
    shutil.rmtree(path, ignore_errors=True)


def replace(src: str, dst: str):
  """os.replace: atomic locally. On object stores an object appears whole when written anyway;
  the rename there is a copy and a delete."""
  if is_url(src) or is_url(dst):
    _gfile().rename(src, dst, overwrite=True)
  else:
    os.replace(src, dst)


def rename(src: str, dst: str):
  """Renames a file or a folder (os.rename; on object stores object by object)."""
  src, dst = str(src), str(dst)
  if not (is_url(src) or is_url(dst)):
    os.rename(src, dst)
  elif _gfile().isdir(src):  # object stores have no folders to rename: move what is inside
    for root, _, names in _gfile().walk(src):
      target = dst + root[len(src):]
      _gfile().makedirs(target)
      for name in names:
        _gfile().rename(join(root, name), join(target, name), overwrite=False)
    _gfile().rmtree(src)
  else:
    _gfile().rename(src, dst, overwrite=False)


def copy(src: str, dst: str):
  """shutil.copyfile, also between local paths and URLs."""
  if is_url(src) or is_url(dst):
    _gfile().copy(src, dst, overwrite=True)
  else:
    shutil.copyfile(src, dst)


def samefile(a: str, b: str) -> bool:
  if is_url(a) or is_url(b):
    return a.rstrip('/') == b.rstrip('/')
  return os.path.samefile(a, b)


def stat(path: str) -> tuple[int, int]:
  """(size in bytes, modification time in ns)."""
  if is_url(path):
    s = _gfile().stat(path)
    return s.length, s.mtime_nsec
  s = os.stat(path)
  return s.st_size, s.st_mtime_ns


def file_sha256(path: str) -> str:
  """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


class _RawFile(io.RawIOBase):
  """A tf.io.gfile.GFile as a raw stream, so io's buffered and text layers work on it (encodings
  such as utf-8-sig, newline='' for csv) exactly as on a local file."""

  def __init__(self, f, mode):
    super().__init__()
    self._f, self._mode = f, mode
    if 'r' not in mode:
      f.write(b'')  # GFile creates the file at its first write: open(p, 'w').close() must too

  def readable(self):
    return 'r' in self._mode

  def writable(self):
    return 'r' not in self._mode

  def readinto(self, b):
    data = self._f.read(len(b))
    b[:len(data)] = data
    return len(data)

  def write(self, b):
    self._f.write(bytes(b))
    return len(b)

  def close(self):
    if not self.closed:
      self._f.close()
    super().close()


# pylint: disable-next=redefined-builtin
def open(path: str, mode: str = 'r', encoding=None, newline=None):
  """builtins.open for local paths; for a URL the same kinds of file object, through tf.io.gfile
  ('a' on an object store rewrites the object on close)."""
  if not is_url(path):
    return io.open(path, mode, encoding=encoding, newline=newline)
  raw = _RawFile(_gfile().GFile(path, mode.replace('t', '').replace('b', '') + 'b'), mode)
  buffered = io.BufferedReader(raw) if 'r' in mode else io.BufferedWriter(raw)
  if 'b' in mode:
    return buffered
  return io.TextIOWrapper(buffered, encoding=encoding or 'utf-8', newline=newline)


def fsync(f):
  """os.fsync for a local file (its errors raised, a full disk among them); an object store has no
  such step (a file opened on a URL has no file descriptor)."""
  try:
    fd = f.fileno()
  except (OSError, ValueError, io.UnsupportedOperation):
    return
  os.fsync(fd)


@contextlib.contextmanager
def local_copy(path: str):
  """Yields a local path with the content of `path` (itself when local): for libraries that take
  only a local file name."""
  if not is_url(path):
    yield path
    return
  with tempfile.TemporaryDirectory(prefix='electra_jax-') as tmp:
    local = os.path.join(tmp, basename(path))
    _gfile().copy(path, local, overwrite=True)
    yield local


@contextlib.contextmanager
def local_output(path: str):
  """Yields a local path to write; when the block ends without error it is uploaded to `path`
  (a URL; a local `path` is yielded as it is)."""
  if not is_url(path):
    yield path
    return
  with tempfile.TemporaryDirectory(prefix='electra_jax-') as tmp:
    local = os.path.join(tmp, basename(path))
    yield local
    _gfile().copy(local, path, overwrite=True)
