"""The embedded offline default corpus: English prose that every Python install carries.

Nothing can be downloaded at run time, so the default corpus (`config.data.corpus = ''`) is made from the
Python documentation shipped with the interpreter: the language-reference topics of `pydoc_data` and the
docstrings of the standard library's modules, read with `ast` (never imported: importing runs code).
The output is one sentence per line with a blank line between documents (the builder's input format).
A document is one pydoc topic, or the docstrings of one standard-library module in source order: single
docstrings are mostly one line, and a document that short would become one mostly-padding example.
"""
import ast
import contextlib
import gc
import os
import re
import sysconfig

from pydoc_data import topics as pydoc_topics

from electra_jax import paths
from electra_jax import sentences

# Folders of the standard library that hold tests, tools or third-party code rather than documentation.
_SKIPPED_DIRS = frozenset({
    '__pycache__', 'test', 'tests', 'idlelib', 'site-packages', 'dist-packages', 'lib2to3',
    'turtledemo', 'ensurepip', 'lib-dynload', 'pydoc_data'})
_MIN_SENTENCE_CHARS = 20
_MIN_SENTENCE_WORDS = 4
_CODE_PREFIXES = ('>>>', '...', '$ ', '#', '%', '|', '+-', '=', '*', '::', '.. ')
# Characters of prose; a sentence with a smaller share of them than this is taken to be code or a table.
_PROSE_CHARS = re.compile(r"[A-Za-z0-9 ,.;:'\"()\-?!*/’“”]")
_MIN_PROSE_SHARE = 0.9
_BULLET = re.compile(r'^(?:[*+-]|\d+\.)\s+')


def _looks_like_prose(sentence: str) -> bool:
  if sentence.startswith(_CODE_PREFIXES):
    return False
  if len(sentence) < _MIN_SENTENCE_CHARS or len(sentence.split()) < _MIN_SENTENCE_WORDS:
    return False
  return len(_PROSE_CHARS.findall(sentence)) >= _MIN_PROSE_SHARE * len(sentence)


def _indent(line: str) -> int:
  return len(line) - len(line.lstrip())


def _paragraphs(text: str):
  """Yields the prose paragraphs of `text` (blank-line separated), each bullet item on its own.

  A paragraph indented deeper than the one before it, when that one ends with ':' (reST's '::' and
  "for example:"), is a code block or a grammar rule; doctest paragraphs are code too.
  """
  previous_indent, previous_ends_with_colon = 0, False
  for paragraph in re.split(r'\n[ \t]*\n', text):
    lines = [line.rstrip() for line in paragraph.splitlines() if line.strip()]
    if not lines:
      continue
    indent = _indent(lines[0])
    is_code = (previous_ends_with_colon and indent > previous_indent) or any(
        line.lstrip().startswith(('>>>', '... ')) for line in lines)
    if is_code:
      continue  # the colon still opens this block for the paragraphs of the same depth after it
    previous_indent, previous_ends_with_colon = indent, lines[-1].endswith(':')
    item = []
    for line in lines:
      line = line.strip()
      if _BULLET.match(line) and item:
        yield ' '.join(item)
        item = []
      item.append(_BULLET.sub('', line))
    yield ' '.join(item)


def document_sentences(text: str) -> list[str]:
  """The prose sentences of one document's raw text."""
  return [s for p in _paragraphs(text) for s in sentences.split_sentences(p) if _looks_like_prose(s)]


def _module_docstrings(tree: ast.Module):
  """Yields the docstrings of a module, its classes and functions, in source order."""
  documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
  stack = [tree]
  while stack:
    node = stack.pop()
    docstring = ast.get_docstring(node, clean=True)
    if docstring:
      yield docstring
    children = [c for c in ast.iter_child_nodes(node) if isinstance(c, documented[1:])]
    stack.extend(reversed(children))


def _stdlib_sources(stdlib_dir: str):
  """Yields the standard library's .py files, in a fixed (sorted) order."""
  for root, dirs, files in os.walk(stdlib_dir):
    dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith(('test', 'config-')))
    for name in sorted(files):
      if name.endswith('.py') and not name.startswith('test'):
        yield os.path.join(root, name)


def _documents():
  """Yields each document of the corpus as a list of sentences (possibly empty)."""
  for key in sorted(pydoc_topics.topics):
    yield document_sentences(pydoc_topics.topics[key])
  for path in _stdlib_sources(sysconfig.get_paths()['stdlib']):
    try:
      with open(path, 'rb') as f:
        tree = ast.parse(f.read(), filename=path)
    except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
      continue  # e.g. files kept for other Python versions; the corpus simply goes without them
    yield [s for docstring in _module_docstrings(tree) for s in document_sentences(docstring)]


@contextlib.contextmanager
def _no_cyclic_gc():
  """Pauses the cyclic garbage collector.

  It would rescan a large heap (e.g. TensorFlow's) again and again while millions of AST nodes are made,
  tripling the time; ASTs hold no cycles, so reference counting frees them.
  """
  was_enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if was_enabled:
      gc.enable()


def write_demo_corpus(path: str) -> str:
  """Writes the demo corpus to `path` (atomically) and returns `path`."""
  tmp_path = f'{path}.tmp-{os.getpid()}'
  first = True
  with _no_cyclic_gc(), paths.open(tmp_path, 'w', encoding='utf-8') as f:
    for doc in _documents():
      if not doc:
        continue
      if not first:
        f.write('\n')
      f.write('\n'.join(doc) + '\n')
      first = False
  paths.replace(tmp_path, path)
  return path
