r"""Gradient-disentangled embedding sharing against ELECTRA's sharing, and zero-shot by replaced-token
detection, on the demo config and the embedded corpus.

  python benchmarks/embedding_sharing.py --workdir=/tmp/electra_sharing [--seeds=3]

For each of model.embedding_sharing = 'shared' (ELECTRA) and 'gdes' (DeBERTaV3) and each seed,
pre-trains configs/demo.py (the same steps), then reports the held-out discriminator AUC, the
dev accuracy of fine-tuning on `family`, and zero-shot accuracy on `family` (score.py) against the
majority class. The medians over seeds are printed in one table.

`family`: a sentence of a standard-library docstring -> which family its module belongs to
(files, network, numbers, text, concurrency; by the top-level module name), 1,500 train and 500
dev sentences, balanced. The sentences are part of the demo corpus (the pre-training text).
Zero-shot prompt: '{text} It is about {label}.' with the words file, network, number, text, thread.
"""
import ast
import json
import os
import random
import sys
import sysconfig
import time

from absl import app
from absl import flags
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from electra_jax import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string('workdir', '/tmp/electra_sharing', 'Where everything goes.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Pre-training seeds per arm.')
_STEPS = flags.DEFINE_integer('steps', 0, 'Pre-training steps (0: configs/demo.py\'s).')

FAMILIES = {
    'files': ('os', 'pathlib', 'shutil', 'glob', 'tempfile', 'fnmatch', 'filecmp', 'zipfile',
              'tarfile', 'io', 'posixpath', 'ntpath'),
    'network': ('socket', 'http', 'urllib', 'email', 'smtplib', 'ftplib', 'imaplib', 'poplib',
                'ssl', 'xmlrpc', 'socketserver', 'mailbox'),
    'numbers': ('math', 'statistics', 'decimal', 'fractions', 'random', 'numbers', 'cmath',
                '_pydecimal'),
    'text': ('string', 're', 'textwrap', 'difflib', 'unicodedata', 'locale', 'gettext', 'codecs',
             'sre_parse', 'sre_compile', 'stringprep'),
    'concurrency': ('threading', 'multiprocessing', 'asyncio', 'concurrent', 'queue',
                    'subprocess', 'sched', 'selectors'),
}
LABEL_WORDS = 'files:file,network:network,numbers:number,text:text,concurrency:thread'
TEMPLATE = '{text} It is about {label}.'


def write_family_task(directory: str):
  """family_{train,dev}.jsonl from the standard library's docstrings (demo_corpus's filters)."""
  from electra_jax import demo_corpus  # pylint: disable=g-import-not-at-top
  if os.path.exists(os.path.join(directory, 'family_dev.jsonl')):
    return
  stdlib = sysconfig.get_paths()['stdlib']
  family_of = {m: f for f, modules in FAMILIES.items() for m in modules}
  pools = {f: [] for f in FAMILIES}
  for path in demo_corpus._stdlib_sources(stdlib):  # pylint: disable=protected-access
    top = os.path.relpath(path, stdlib).split(os.sep)[0].removesuffix('.py')
    if top not in family_of:
      continue
    with open(path, 'rb') as f:
      tree = ast.parse(f.read())
    for docstring in demo_corpus._module_docstrings(tree):  # pylint: disable=protected-access
      pools[family_of[top]] += [s for s in demo_corpus.document_sentences(docstring)
                                if len(s.split()) <= 40]
  rng = random.Random(0)
  rows = {'train': [], 'dev': []}
  for family, sentences in sorted(pools.items()):
    sentences = sorted(set(sentences))
    rng.shuffle(sentences)
    rows['train'] += [{'sentence': s, 'label': family} for s in sentences[:300]]
    rows['dev'] += [{'sentence': s, 'label': family} for s in sentences[300:400]]
  os.makedirs(directory, exist_ok=True)
  for split, examples in rows.items():
    rng.shuffle(examples)
    with open(os.path.join(directory, f'family_{split}.jsonl'), 'w') as f:
      f.writelines(json.dumps(e) + '\n' for e in examples)


def finetune_config(task_dir: str, init_checkpoint: str):
  from configs import finetune as finetune_configs  # pylint: disable=g-import-not-at-top
  c = finetune_configs.get_config()
  c.task = 'custom'
  c.custom.name = 'family'
  c.custom.train_file = os.path.join(task_dir, 'family_train.jsonl')
  c.custom.dev_file = os.path.join(task_dir, 'family_dev.jsonl')
  c.custom.text_a = 'sentence'
  c.custom.metrics = 'accuracy'
  c.init_checkpoint = init_checkpoint
  c.max_seq_length = 64
  c.optim.learning_rate = 3e-4
  c.eval_every_steps = 10**9  # the dev accuracy after the last step
  c.predict_test = False
  c.log_every_steps = 10**9
  c.mesh_shape = (1, 1, 1)
  c.zeroshot.template = TEMPLATE
  c.zeroshot.label_words = LABEL_WORDS
  return c


def main(argv):
  del argv
  host_memory.retain_freed_memory()
  from configs import demo  # pylint: disable=g-import-not-at-top
  from electra_jax import build_data, score, train  # pylint: disable=g-import-not-at-top
  from electra_jax.finetune import loop  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(_WORKDIR.value)
  task_dir = os.path.join(workdir, 'task')
  write_family_task(task_dir)
  started = time.time()
  rows = {}
  for sharing in ('shared', 'gdes'):
    for seed in range(_SEEDS.value):
      config = demo.get_config()
      config.seed = seed
      config.num_train_steps = _STEPS.value or config.num_train_steps
      config.model.embedding_sharing = sharing
      config.data.data_dir = os.path.join(workdir, 'data')  # one build for every run
      run = os.path.join(workdir, f'{sharing}_{seed}')
      build_data.build_pretraining_data(config, run)  # the first run builds, the others reuse
      result = train.train_and_evaluate(config, run)
      ft = finetune_config(task_dir, run)
      results_path = os.path.join(run, 'family', 'results.json')
      if not os.path.exists(results_path):
        loop.run(ft, os.path.join(run, 'family'))
      with open(results_path) as f:
        accuracy = json.load(f)['median']['dev']['accuracy']
      zeroshot = score.run_zeroshot(ft, os.path.join(run, 'zeroshot'))
      rows.setdefault(sharing, []).append({
          'seed': seed, 'disc_auc': result['eval']['disc_auc'],
          'mlm_accuracy': result['eval']['mlm_accuracy'], 'finetune': accuracy,
          'zeroshot': zeroshot['accuracy'], 'majority': zeroshot['majority_accuracy']})
      print(json.dumps({sharing: rows[sharing][-1]}), flush=True)
  print(f'\nmedian over {_SEEDS.value} pre-training seeds (each seed in brackets); '
        f'{time.time() - started:.0f} s in all')
  print('| embedding_sharing | held-out disc AUC | MLM accuracy | family fine-tuned | '
        'family zero-shot | majority class |')
  print('|---|---|---|---|---|---|')
  for sharing, runs in rows.items():
    cell = lambda key, fmt: (f'{np.median([r[key] for r in runs]):{fmt}} ['
                             + ' '.join(f'{r[key]:{fmt}}' for r in runs) + ']')
    print(f'| {sharing} | {cell("disc_auc", ".3f")} | {cell("mlm_accuracy", ".3f")} | '
          f'{cell("finetune", ".1f")} | {cell("zeroshot", ".1f")} | {runs[0]["majority"]:.1f} |')
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(rows, f, indent=2)


if __name__ == '__main__':
  app.run(main)
