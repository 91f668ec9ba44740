"""Executes notebooks/electra_quickstart.ipynb top to bottom (so it cannot rot) and checks what it
shows: the discriminator learned, fine-tuning beat the majority class, the HF export matches."""
import os
import re

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, 'notebooks', 'electra_quickstart.ipynb')


def test_committed_notebook_has_no_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  for cell in nb.cells:
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None


def test_notebook_runs_and_shows_learning(tmp_path, monkeypatch):
  # The kernel is a fresh process: give it the usual single CPU device, not the tests' 8.
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  monkeypatch.setenv('NOTEBOOK_WORKDIR', str(tmp_path / 'work'))
  monkeypatch.setenv('ELECTRA_JAX_REPO', ROOT)
  monkeypatch.setenv('MPLBACKEND', 'Agg')
  # Half the notebook's 300 pre-training steps: its pre-training cell is most of this test's time.
  monkeypatch.setenv('NOTEBOOK_PRETRAIN_STEPS', '150')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=900, kernel_name='python3',
                 resources={'metadata': {'path': os.path.join(ROOT, 'notebooks')}}).execute()
  nbformat.write(nb, str(tmp_path / 'executed.ipynb'))  # to look at after a failure
  text = '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                   for o in c.outputs if o.output_type == 'stream')
  auc = {int(s): float(v) for s, v in re.findall(r'(\d+): ([0-9.]+)', text.split(
      'held-out AUC by step:')[1].splitlines()[0])}
  assert max(auc) == 150 and auc[150] > 0.65, auc
  assert len(re.findall(r'text score -?[0-9.]+: ', text)) == 2  # the scorer cell
  acc, majority = map(float, re.search(r'dev accuracy: ([0-9.]+)% \(majority class ([0-9.]+)%',
                                       text).groups())
  assert acc > majority + 10, (acc, majority)
  assert os.path.exists(tmp_path / 'work' / 'curves.png')
  diff = re.search(r'max \|logit difference\| ours vs transformers: (\S+)', text)
  assert diff and float(diff.group(1)) < 1e-4, text[-2000:]
