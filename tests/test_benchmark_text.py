"""Tests of benchmarks/doc_text.py, the learning benchmark's text: each manual counted once."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'benchmarks'))

import doc_text  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_a_tree_reached_through_several_linked_names_is_read_once(tmp_path):
  # Debian's layout: python3.11-dev and python3.11-venv link to python3.11, and python3.11-doc
  # holds only a link to python3.11/html; a glob over python3.* reaches each file 4 times.
  sources = tmp_path / 'python3.11' / 'html' / '_sources' / 'library'
  sources.mkdir(parents=True)
  for name in ('os.rst.txt', 're.rst.txt', 'conf.py'):
    (sources / name).write_text('text\n')
  (tmp_path / 'python3.11-dev').symlink_to('python3.11')
  (tmp_path / 'python3.11-venv').symlink_to('python3.11')
  (tmp_path / 'python3.11-doc').mkdir()
  (tmp_path / 'python3.11-doc' / 'html').symlink_to('../python3.11/html')

  files = doc_text._files(str(tmp_path / 'python3.*' / 'html' / '_sources'), ('.rst.txt',))

  real = str(sources.resolve())
  assert files == [os.path.join(real, 'os.rst.txt'), os.path.join(real, 're.rst.txt')]


def test_package_versions_of_files_no_package_owns():
  # Outside a Debian package (or without dpkg), the version is 'unknown', not an error.
  assert doc_text.package_versions({'python': [os.path.abspath(__file__)]}) == {
      'python': 'unknown'}
