"""Tests of benchmarks/learning_table.py: the core claim's bar read from learning.py's results."""
import json
import os
import subprocess
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          'benchmarks')
sys.path.insert(0, BENCHMARKS)

# electra_jax.main first, as another test in the same pytest worker may have imported it: this
# module must import beside it (its flags, --workdir among them, are defined only as a script).
from electra_jax import main as _  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
import learning_table  # pylint: disable=g-import-not-at-top,wrong-import-position

FINETUNED = {'lr': 0.0001, 'epochs': 6.0, 'dropout': 0.0, 'head_init': 'probe'}


def _write(workdir, variant, seed, lr, rows):
  """A results file as learning.py writes it (only the fields the table reads)."""
  config = {'seed': seed, 'num_train_steps': 6512, 'optim': {'learning_rate': lr}}
  name = f'results_{variant}.json' if variant else 'results.json'
  with open(os.path.join(workdir, name), 'w') as f:
    json.dump({'config': config, 'rows': rows}, f)


def _row(arm, scores, finetune=FINETUNED):
  steps, flops = {'electra': (6512, 1.654e14), 'mlm': (7130, 1.6544e14), 'none': (0, 0.0)}[arm]
  return {'arm': arm, 'budget': 1.0, 'steps': steps, 'flops': flops, 'finetune': finetune,
          'scores': scores}


@pytest.fixture
def workdir(tmp_path):
  # none: next 53.0, splice 48.0 (medians of 3 fine-tuning seeds).
  _write(tmp_path, '', 0, 3e-4, [_row('none', {'next': [52.0, 53.0, 55.0],
                                                 'splice': [48.0, 47.0, 49.0]})])
  # The masked LM at 5e-4, 3 pre-training seeds: next medians 61, 63, 64 -> 63;
  # splice 57, 54, 58 -> 57.
  for seed, (n, s) in enumerate([(61.0, 57.0), (63.0, 54.0), (64.0, 58.0)]):
    _write(tmp_path, f'mlm_s{seed}', seed, 5e-4,
           [_row('mlm', {'next': [n - 1, n, n + 2], 'splice': [s, s - 3, s + 1]}),
            _row('mlm', {'next': [n - 3], 'splice': [s - 2]}, {'probe_only': True})])
  # ELECTRA at 3e-4, 2 pre-training seeds so far: next 67, 66; splice 57.5, 59.5.
  for seed, (n, s) in enumerate([(67.0, 57.5), (66.0, 59.5)]):
    _write(tmp_path, f'electra_s{seed}', seed, 3e-4,
           [_row('electra', {'next': [n, n + 1, n - 1], 'splice': [s, s, s - 4]})])
  return tmp_path


def test_median_range_of_known_and_missing_seeds():
  assert learning_table.median_range([61.0, 63.0, 64.0], 3) == (63.0, 63.0)
  # A missing third seed puts the median anywhere between the two known ones.
  assert learning_table.median_range([66.0, 67.0], 3) == (66.0, 67.0)
  # With two of three missing, anything from 0 to 100.
  assert learning_table.median_range([66.0], 3) == (0.0, 100.0)


def test_bar_is_met_failed_or_open_only_when_every_possible_median_agrees():
  # ELECTRA >= MLM + 2 and both >= none + 5.
  assert learning_table.bar((66.0, 67.0), (63.0, 63.0), 53.0, 2, 5) == 'met'
  assert learning_table.bar((57.5, 59.5), (57.0, 57.0), 48.0, 2, 5) == 'open'
  assert learning_table.bar((57.5, 58.9), (57.0, 57.0), 48.0, 2, 5) == 'failed'
  # The masked LM less than 5 above no pre-training fails it whatever ELECTRA does.
  assert learning_table.bar((70.0, 70.0), (57.0, 57.0), 52.5, 2, 5) == 'failed'
  assert learning_table.bar((0.0, 100.0), (57.0, 57.0), 48.0, 2, 5) == 'open'
  # A lead of exactly 2 points (24 of 1,200 dev examples) is met, though the accuracies as
  # computed differ by a hair under 2 in floats; one example fewer is not.
  electra, mlm = 67.58333333333333, 65.58333333333334
  assert electra - mlm < 2
  assert learning_table.bar((electra, 69.3), (63.6, mlm), 53.8, 2, 5) == 'met'
  assert learning_table.bar((electra - 1 / 12, 69.3), (63.6, mlm), 53.8, 2, 5) == 'open'


def test_report_groups_the_seeds_and_checks_the_bar_per_task(workdir):
  lines = learning_table.report(str(workdir)).splitlines()
  assert '| none | - | 0 | 0 | (default) | 53.0 [53.0] | 48.0 [48.0] |' in lines
  assert ('| electra | 0.0003 | 6512 | 1.65e+14 | electra_s0, electra_s1 | '
          '66.0-67.0 [67.0 66.0] | 57.5-59.5 [57.5 59.5] |') in lines
  assert ('| mlm | 0.0005 | 7130 | 1.65e+14 | mlm_s0, mlm_s1, mlm_s2 | '
          '63.0 [61.0 63.0 64.0] | 57.0 [57.0 54.0 58.0] |') in lines
  bars = [l for l in lines if l.startswith('bar ')]
  assert len(bars) == 1 and bars[0].endswith(': next met, splice open')
  # The frozen probe's rows are a table of their own, with no bar.
  frozen = lines.index(next(l for l in lines if l.startswith('frozen')))
  assert '| mlm | 0.0005 | 7130 | 1.65e+14 | mlm_s0, mlm_s1, mlm_s2 | 60.0 [58.0 60.0 61.0] | ' \
      '55.0 [55.0 52.0 56.0] |' in lines[frozen:]
  assert not any(l.startswith('bar ') for l in lines[frozen:])

  # ELECTRA's third seed settles splice: its median 59.5 is 2.5 above the masked LM's 57.0.
  _write(workdir, 'electra_s2', 2, 3e-4, [_row('electra', {'next': [65.0], 'splice': [60.0]})])
  bars = [l for l in learning_table.report(str(workdir)).splitlines() if l.startswith('bar ')]
  assert bars[0].endswith(': next met, splice met')


def test_an_empty_workdir_is_one_error_line(tmp_path):
  run = subprocess.run([sys.executable, os.path.join(BENCHMARKS, 'learning_table.py'),
                        f'--workdir={tmp_path}'], capture_output=True, text=True, check=False)
  assert run.returncode == 1
  assert run.stderr.strip() == (f'learning_table.py: no results*.json in {tmp_path}; run '
                                'benchmarks/learning.py with this --workdir first')
