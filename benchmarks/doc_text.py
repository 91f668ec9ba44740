"""Real English text for the learning benchmark, from documentation that Debian packages ship.

Nothing is downloaded. The sources (install them with `apt-get install python3-doc linux-doc
perl-doc postgresql-doc`; each one missing is skipped and reported):

  python    Python's documentation sources, /usr/share/doc/python3.*/html/_sources/**/*.rst.txt
  kernel    the Linux kernel's Documentation/**/*.rst.gz, *.txt.gz (translations, ABI, device-tree
            bindings and the like left out)
  perl      Perl's manual, /usr/share/perl/5.*/pod/*.pod
  postgres  PostgreSQL's manual, /usr/share/doc/postgresql-doc-*/html/*.html

Each file is one document, reduced to its prose sentences (electra_jax.demo_corpus's filters: code
blocks, tables and short fragments dropped); its "area" is its source plus, for python and kernel,
its top-level folder (e.g. kernel/networking, python/library). Each file is read once, however many
linked names lead to it. With all four installed (Debian 12; learning.py's text.json records the
packages' versions, package_versions()): 4,710 files; learning.py pre-trains on 27.9 MB of them
(278,277 sentences) and holds 12% of the documents out for its tasks. WordNet and GCIDE are
deliberately not used (kept for independent checks).
"""
import glob
import gzip
import html.parser
import os
import re
import subprocess

from electra_jax import demo_corpus

KERNEL_DOCS = '/usr/share/doc/linux-doc-*/Documentation'
PYTHON_DOCS = '/usr/share/doc/python3.*/html/_sources'
PERL_PODS = '/usr/share/perl/5.*/pod'
POSTGRES_DOCS = '/usr/share/doc/postgresql-doc-*/html'
PACKAGES = {'python': 'python3-doc', 'kernel': 'linux-doc', 'perl': 'perl-doc',
            'postgres': 'postgresql-doc'}
# Kernel folders that hold translations, generated ABI listings, bindings or build machinery.
_KERNEL_SKIPPED = {'translations', 'ABI', 'devicetree', 'features', 'sphinx', 'sphinx-static',
                   'output', 'netlink', 'images', 'litmus-tests'}

_UNDERLINE = re.compile(r'^\s*([=\-~^"\'`#*+<>_:.])\1{2,}\s*$')  # reST section adornments
_ROLE = re.compile(r':[\w:.-]+:`([^`<]*?)(?:\s*<[^>]*>)?`')      # :role:`text <target>`
_LINK = re.compile(r'`([^`<]+?)(?:\s*<[^>]*>)?`__?')             # `text <url>`_
_LITERAL = re.compile(r'``([^`]+)``')
_EMPHASIS = re.compile(r'\*\*?([^*\s][^*]*?)\*\*?')
_SUBSTITUTION = re.compile(r'\|([\w -]+)\|')
_POD_CODE = re.compile(r'[CBIFSLXE]<+\s*([^<>]*?)\s*>+')          # C<code>, L<text|link>, ...


def _read(path: str) -> str:
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rt', encoding='utf-8', errors='replace') as f:
    return f.read()


def rst_text(text: str) -> str:
  """reStructuredText -> plain paragraphs: adornments and directives dropped, inline markup kept
  as its text (a directive's indented body then reads as code and is dropped)."""
  lines = []
  for line in text.splitlines():
    if _UNDERLINE.match(line):
      continue
    if line.lstrip().startswith('.. '):
      lines.append('')
      continue
    for pattern in (_ROLE, _LITERAL, _LINK, _EMPHASIS, _SUBSTITUTION):
      line = pattern.sub(r'\1', line)
    lines.append(line)
  return '\n'.join(lines)


def pod_text(text: str) -> str:
  """Perl POD -> plain paragraphs: commands and =begin/=end blocks dropped, formatting codes kept
  as their text (verbatim, i.e. indented, paragraphs read as code and are dropped)."""
  lines, skipping = [], False
  for line in text.splitlines():
    if line.startswith('=begin'):
      skipping = True
    if line.startswith('='):
      skipping = skipping and not line.startswith('=end')
      lines.append('')
      continue
    if skipping:
      continue
    for _ in range(3):  # nested codes
      line = _POD_CODE.sub(lambda m: m.group(1).split('|')[0], line)
    lines.append(line)
  return '\n'.join(lines)


class _HtmlText(html.parser.HTMLParser):
  """Text of block elements as paragraphs; <pre>, <script>, <style> and <title> dropped."""
  _BLOCKS = {'p', 'div', 'li', 'td', 'th', 'dt', 'dd', 'h1', 'h2', 'h3', 'h4', 'br', 'tr', 'table'}
  _SKIPPED = {'pre', 'script', 'style', 'title'}

  def __init__(self):
    super().__init__()
    self.parts, self.skipping = [], 0

  def handle_starttag(self, tag, attrs):
    self.skipping += tag in self._SKIPPED
    if tag in self._BLOCKS:
      self.parts.append('\n\n')

  def handle_endtag(self, tag):
    if tag in self._SKIPPED:
      self.skipping = max(0, self.skipping - 1)
    if tag in self._BLOCKS:
      self.parts.append('\n\n')

  def handle_data(self, data):
    if not self.skipping:
      self.parts.append(data.replace('\n', ' '))


def html_text(text: str) -> str:
  parser = _HtmlText()
  parser.feed(text)
  return ''.join(parser.parts)


def _files(pattern: str, suffixes) -> list[str]:
  # Real paths, each once: Debian links several names to one tree (/usr/share/doc/python3.11-dev,
  # -venv and python3.11-doc/html all lead to python3.11's docs; /usr/share/perl/5.36 to 5.36.0),
  # so the glob alone finds Python's manual 4 times and Perl's twice.
  return sorted({os.path.realpath(p) for root in glob.glob(pattern)
                 for p in glob.glob(os.path.join(root, '**', '*'), recursive=True)
                 if p.endswith(suffixes)})


def available_sources() -> dict:
  """{source: its files} for each installed source."""
  found = {
      'python': _files(PYTHON_DOCS, ('.rst.txt',)),
      'kernel': [p for p in _files(KERNEL_DOCS, ('.rst.gz', '.txt.gz'))
                 if p.split('/Documentation/')[1].split('/')[0] not in _KERNEL_SKIPPED
                 and '/' in p.split('/Documentation/')[1]],
      'perl': _files(PERL_PODS, ('.pod',)),
      'postgres': _files(POSTGRES_DOCS, ('.html',)),
  }
  return {k: v for k, v in found.items() if v}


def package_versions(sources: dict) -> dict:
  """{source: 'package version'} of the Debian package that owns each source's first file: the
  text (and so every number measured on it) changes with the packages' point releases."""
  versions = {}
  for source, files in sorted(sources.items()):
    try:
      owner = subprocess.run(['dpkg-query', '-S', files[0]], capture_output=True, text=True,
                             check=True).stdout.split(':')[0].strip()
      version = subprocess.run(['dpkg-query', '-W', '-f=${Version}', owner], capture_output=True,
                               text=True, check=True).stdout.strip()
      versions[source] = f'{owner} {version}'
    except (OSError, subprocess.CalledProcessError):  # not a Debian system, or not from a package
      versions[source] = 'unknown'
  return versions


def documents(sources: dict):
  """Yields (area, document id, prose sentences) for every file of `sources` (in a fixed order)."""
  for source in sorted(sources):
    for path in sources[source]:
      if source == 'python':
        relative = path.split('/_sources/')[1]
        area, text = 'python/' + relative.split('/')[0], rst_text(_read(path))
      elif source == 'kernel':
        relative = path.split('/Documentation/')[1]
        area, text = 'kernel/' + relative.split('/')[0], rst_text(_read(path))
      elif source == 'perl':
        relative, area, text = os.path.basename(path), 'perl', pod_text(_read(path))
      else:
        relative, area, text = os.path.basename(path), 'postgres', html_text(_read(path))
      yield area, f'{source}:{relative}', demo_corpus.document_sentences(text)
