"""Pre-training text: where it comes from (files, a TFDS dataset, the demo corpus) and its documents.

`config.data.corpus` is comma-separated text files/globs/directories (one sentence per line, a blank line
between documents), or 'tfds:NAME[:SPLIT]' (each example's text is a document, split into sentences
here), or '' for the embedded demo corpus (demo_corpus.py). Nothing is downloaded.
"""
import dataclasses
import hashlib
import sys

from electra_jax import demo_corpus
from electra_jax import paths
from electra_jax import sentences
from electra_jax.errors import UserError

DEMO_CORPUS_FILE = 'corpus.txt'


@dataclasses.dataclass(frozen=True)
class Corpus:
  spec: str  # config.data.corpus as given
  description: str  # for logs and meta.json
  files: tuple[str, ...] = ()  # text files, for file corpora
  tfds_name: str = ''
  tfds_split: str = ''
  fingerprint: tuple = ()  # changes when the text does: decides whether old shards are reused


def file_fingerprint(path: str) -> list:
  size, mtime_ns = paths.stat(path)
  return [paths.abspath(path), size, mtime_ns]


def _demo_corpus_code_hash() -> str:
  """Changes when the code that writes the demo corpus does (then the corpus may have changed)."""
  digest = hashlib.sha256()
  for module in (demo_corpus, sentences):
    with open(module.__file__, 'rb') as f:
      digest.update(f.read())
  return digest.hexdigest()[:16]


def _expand_corpus_entry(entry: str) -> list[str]:
  path = paths.expanduser(entry)
  if paths.isdir(path):
    return sorted(paths.join(path, n) for n in paths.listdir(path)
                  if not n.startswith('.') and paths.isfile(paths.join(path, n)))
  if paths.has_magic(path):
    return sorted(p for p in paths.glob(path) if paths.isfile(p))
  return [path] if paths.isfile(path) else []


def resolve(spec: str, data_dir: str) -> Corpus:
  """Parses config.data.corpus: '' (demo corpus), 'tfds:NAME[:SPLIT]', or comma-separated files/globs."""
  spec = spec.strip()
  if not spec:
    path = paths.join(data_dir, DEMO_CORPUS_FILE)
    return Corpus(spec='', description='demo corpus (Python documentation and docstrings)',
                  files=(path,), fingerprint=('demo', sys.version, _demo_corpus_code_hash()))
  if spec.startswith('tfds:'):
    name, _, split = spec[len('tfds:'):].partition(':')
    if not name:
      raise UserError(f'corpus {spec!r} names no TFDS dataset; use tfds:NAME[:SPLIT]')
    split = split or 'train'
    return Corpus(spec=spec, description=f'TFDS {name} split {split}', tfds_name=name,
                  tfds_split=split, fingerprint=('tfds', name, split))
  files = []
  for entry in (e.strip() for e in spec.split(',')):
    if not entry:
      continue
    matches = _expand_corpus_entry(entry)
    if not matches:
      raise UserError(f'corpus entry {entry!r} matches no file')
    files += [m for m in matches if m not in files]
  if not files:
    raise UserError(f'corpus {spec!r} names no file')
  return Corpus(spec=spec, description=f'{len(files)} text file(s): {", ".join(files[:3])}'
                + (', ...' if len(files) > 3 else ''),
                files=tuple(files), fingerprint=tuple(tuple(file_fingerprint(f)) for f in files))


def _text_file_lines(path: str):
  """Yields the stripped lines of a UTF-8 file; a non-UTF-8 or NUL byte is a UserError naming its
  offset."""
  offset = 0
  with paths.open(path, 'rb') as f:
    for raw in f:
      try:
        line = raw.decode('utf-8')
      except UnicodeDecodeError as e:
        raise UserError(
            f'corpus file {path} is not UTF-8 text (byte offset {offset + e.start}): convert it to UTF-8'
        ) from e
      if '\x00' in line:  # valid UTF-8, but no text has NUL bytes: a binary file
        raise UserError(f'corpus file {path} is not text: a NUL byte at byte offset '
                        f'{offset + raw.index(0)} (a binary file?)')
      offset += len(raw)
      yield line.strip()


def split_documents(lines):
  """Stripped lines -> documents (lists of sentences): a blank line or the end ends a document."""
  document = []
  for line in lines:
    if line:
      document.append(line)
    elif document:
      yield document
      document = []
  if document:
    yield document


def _file_documents(path: str):
  return split_documents(_text_file_lines(path))


def _tfds_documents(name: str, split: str, text_key: str):
  """Yields each example's text of a prepared TFDS dataset as a document (nothing is downloaded)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow; only for tfds:)
  try:
    builder = tfds.builder(name)
    dataset = builder.as_dataset(split=split, shuffle_files=False)
  except Exception as e:  # TFDS raises many kinds; any of them means "can't read it here"
    raise UserError(
        f'cannot read TFDS dataset {name} split {split} (it must already be prepared in the TFDS data '
        f'dir; nothing is downloaded): {str(e).splitlines()[0] if str(e) else type(e).__name__}') from e
  if text_key not in builder.info.features:
    raise UserError(f'TFDS dataset {name} has no feature {text_key!r} (it has '
                    f'{", ".join(builder.info.features)}); set --config.data.tfds_text_key')
  for example in tfds.as_numpy(dataset):
    text = example[text_key]
    if isinstance(text, bytes):
      text = text.decode('utf-8', errors='replace')
    document = sentences.split_sentences(str(text))
    if document:
      yield document


def documents(corpus: Corpus, text_key: str = 'text'):
  """Yields the documents of `corpus`, each a list of sentences."""
  if corpus.tfds_name:
    yield from _tfds_documents(corpus.tfds_name, corpus.tfds_split, text_key)
    return
  for path in corpus.files:
    yield from _file_documents(path)
