r"""The core claim's bar, read from the results of learning.py's runs in one workdir.

  python benchmarks/learning_table.py --workdir=/tmp/electra_learning

learning.py writes one results file per --variant (results.json, results_x2_s1.json, ...); each
of its rows is one pre-trained encoder fine-tuned one way (or probed frozen, --probe_only). This
script groups the rows that differ only in the pre-training seed (--config.seed), takes each
encoder's median over its fine-tuning seeds and then the median of those over the pre-training
seeds, and checks the bar for each ELECTRA / masked-LM pair at the same pre-training FLOPs and the
same fine-tuning: on every task, ELECTRA at least --lead points ahead of the masked LM, and both
at least --floor points ahead of no pre-training. A group with fewer than --pretraining_seeds
seeds shows the range its median can still take (a missing seed can score anything from 0 to
100), and the bar reads `met` or `failed` only when every value in those ranges agrees, `open`
otherwise.
"""
import collections
import glob
import json
import os

from absl import app
from absl import flags
import numpy as np


def _group_key(config: dict, row: dict) -> str:
  """What makes two rows the same experiment up to the pre-training seed."""
  config = {**config, 'seed': None}
  return json.dumps([row['arm'], row['steps'], config], sort_keys=True)


def load_groups(workdir: str) -> dict:
  """{fine-tuning setting (json): [group]}; a group holds the rows of one experiment's seeds."""
  groups = collections.OrderedDict()
  for path in sorted(glob.glob(os.path.join(workdir, 'results*.json'))):
    with open(path) as f:
      results = json.load(f)
    variant = os.path.basename(path)[len('results'):-len('.json')].lstrip('_') or '(default)'
    for row in results['rows']:
      setting = json.dumps(row['finetune'], sort_keys=True)
      key = (setting, _group_key(results['config'], row))
      group = groups.setdefault(key, {'arm': row['arm'], 'steps': row['steps'],
                                      'flops': row['flops'], 'config': results['config'],
                                      'seeds': {}})
      seed = results['config']['seed'] if row['arm'] != 'none' else variant
      group['seeds'][seed] = {'variant': variant, 'scores': row['scores']}
  by_setting = collections.OrderedDict()
  for (setting, _), group in groups.items():
    by_setting.setdefault(setting, []).append(group)
  return by_setting


def median_range(values: list, n: int) -> tuple:
  """The lowest and highest median of n values of which these are known (the rest in 0..100)."""
  missing = max(n - len(values), 0)
  return (float(np.median(list(values) + [0.0] * missing)),
          float(np.median(list(values) + [100.0] * missing)))


def task_values(group: dict, task: str) -> list:
  """Each encoder's median over its fine-tuning seeds, for the encoders that ran the task."""
  return [float(np.median(s['scores'][task])) for _, s in sorted(group['seeds'].items(),
                                                                  key=lambda kv: str(kv[0]))
          if task in s['scores']]


def bar(electra: tuple, mlm: tuple, none: float, lead: float, floor: float) -> str:
  """'met', 'failed' or 'open' for (lo, hi) median ranges of ELECTRA and the masked LM."""
  (e_lo, e_hi), (m_lo, m_hi) = electra, mlm
  # Scores are percentages of a finite dev set, and a lead of exactly `lead` points must count
  # as one: 67.58333333333333 - 65.58333333333334 (24 of 1,200 examples) is 1.99999999999999.
  def ahead(a, b, by):
    return round(a - b, 6) >= by
  if ahead(e_lo, m_hi, lead) and ahead(m_lo, none, floor) and ahead(e_lo, none, floor):
    return 'met'
  if not ahead(e_hi, m_lo, lead) or not ahead(m_hi, none, floor) or not ahead(e_hi, none, floor):
    return 'failed'
  return 'open'


def _cell(values: list, n: int) -> str:
  if not values:
    return '-'
  lo, hi = median_range(values, n)
  median = f'{lo:.1f}' if lo == hi else f'{lo:.1f}-{hi:.1f}'
  return f'{median} [{" ".join(f"{v:.1f}" for v in values)}]'


def report(workdir: str, n: int = 3, lead: float = 2.0, floor: float = 5.0) -> str:
  lines = []
  for setting, groups in load_groups(workdir).items():
    finetune = json.loads(setting)
    tasks = sorted({t for g in groups for s in g['seeds'].values() for t in s['scores']})
    how = ('frozen (the probe)' if finetune.get('probe_only') else
           'fine-tuned: ' + ', '.join(f'{k} {v:g}' if isinstance(v, float) else f'{k} {v}'
                                      for k, v in finetune.items()))
    lines += ['', f'{how}; the median over pre-training seeds (in brackets, each encoder\'s '
              'median over its fine-tuning seeds)',
              '| arm | pre-training lr | steps | FLOPs | variants | ' + ' | '.join(tasks) + ' |',
              '|---|---|---|---|---|' + '---|' * len(tasks)]
    order = {'none': 0, 'electra': 1, 'mlm': 2}
    for g in sorted(groups, key=lambda g: (float(f'{g["flops"]:.2e}'), order.get(g['arm'], 3))):
      variants = ', '.join(s['variant'] for _, s in sorted(g['seeds'].items(),
                                                             key=lambda kv: str(kv[0])))
      size = n if g['arm'] != 'none' else len(g['seeds'])
      pretrained = (f'{g["config"]["optim"]["learning_rate"]:g} | {g["steps"]} | {g["flops"]:.2e}'
                    if g['arm'] != 'none' else '- | 0 | 0')
      lines.append(f'| {g["arm"]} | {pretrained} | {variants} | '
                   + ' | '.join(_cell(task_values(g, t), size) for t in tasks) + ' |')
    if finetune.get('probe_only'):
      continue
    nones = [g for g in groups if g['arm'] == 'none']
    for e in (g for g in groups if g['arm'] == 'electra'):
      for m in (g for g in groups if g['arm'] == 'mlm'):
        if abs(e['flops'] - m['flops']) > 0.01 * e['flops']:
          continue
        verdicts = []
        for task in tasks:
          none = [v for g in nones for v in task_values(g, task)]
          if not none or not task_values(e, task) or not task_values(m, task):
            verdicts.append(f'{task} -')
            continue
          verdicts.append(f'{task} ' + bar(median_range(task_values(e, task), n),
                                            median_range(task_values(m, task), n),
                                            float(np.median(none)), lead, floor))
        lines.append(f'bar at {e["flops"]:.2e} FLOPs, ELECTRA lr '
                     f'{e["config"]["optim"]["learning_rate"]:g} against the masked LM lr '
                     f'{m["config"]["optim"]["learning_rate"]:g} (ELECTRA >= masked LM + '
                     f'{lead:g}, both >= none + {floor:g}): ' + ', '.join(verdicts))
  return '\n'.join(lines)


def define_flags():
  """The command line's flags; defined only when run as a script, since importing this module
  (the tests do) next to electra_jax.main must not define a second --workdir."""
  flags.DEFINE_string('workdir', '/tmp/electra_learning', "learning.py's --workdir.")
  flags.DEFINE_integer('pretraining_seeds', 3, 'Pre-training seeds the median is over.')
  flags.DEFINE_float('lead', 2.0, 'Points ELECTRA must lead the masked LM by.')
  flags.DEFINE_float('floor', 5.0, 'Points both must lead no pre-training by.')


def main(argv):
  del argv
  f = flags.FLAGS
  if not glob.glob(os.path.join(f.workdir, 'results*.json')):
    raise SystemExit(f'learning_table.py: no results*.json in {f.workdir}; run '
                     'benchmarks/learning.py with this --workdir first')
  print(report(f.workdir, f.pretraining_seeds, f.lead, f.floor))


if __name__ == '__main__':
  define_flags()
  app.run(main)
