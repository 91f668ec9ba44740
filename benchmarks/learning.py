r"""The core claim, measured: ELECTRA against masked-LM pre-training at equal compute.

  python benchmarks/learning.py --workdir=/tmp/electra_learning                # the table
  python benchmarks/learning.py --workdir=/tmp/electra_learning --budgets=0.25,0.5,1   # the curve
  python benchmarks/learning.py --workdir=/tmp/electra_learning --variant=x2 --arms=electra,mlm \
      --config.num_train_steps=6512                            # twice the budget, runs of their own

Pre-trains configs/cpu_small.py (or --config) twice on the same text: as ELECTRA and as a masked
LM (BERT without next-sentence prediction, dynamic masking: `objective.electra_objective=False`,
the full-size transformer as the masked LM), the MLM for as many steps as give it the same
training FLOPs (XLA's count of each compiled train step, generator included). Then fine-tunes
each, and the same model from random initialization (the floor), on tasks built from held-out
documents of the same text (--tasks; area and next by default), for --seeds seeds, and prints the
median dev accuracies. A run with other --tasks adds its scores to the results of the same runs;
one with another --finetune_lr, --finetune_epochs or --finetune_dropout adds rows of its own.

Text: documentation that Debian packages ship (benchmarks/doc_text.py: Python's, the Linux
kernel's, Perl's and PostgreSQL's manuals; `apt-get install python3-doc linux-doc perl-doc
postgresql-doc`), 27.9 MB of pre-training text, each file read once. 12% of the documents (by a
hash of their names) are held out of pre-training and make the tasks (benchmarks/tasks.py):
  area   one sentence -> which of 8 areas it comes from (perl, postgres, python/library, and five
         kernel/ sections); 300 train and up to 150 dev sentences per area, from different documents
  next   a pair of sentences -> does B directly follow A in its document (1), or is B a sentence of
         another held-out document (0; BERT's next-sentence task); 3000 train, 1200 dev pairs
  order  one sentence -> as written (1), or two adjacent words inside it swapped (0; acceptability,
         CoLA's kind, where the words alone tell nothing); 3000 train, 1200 dev sentences; every
         arm is at chance on it at this scale (benchmarks/README.md, Diagnosis), so it runs only
         when asked: --tasks=area,next,order
  splice one sentence -> as written (1), or the start of one sentence joined to the end of a
         sentence of another document, the same length as written (0; next's question inside one
         sentence); 3000 train, 1200 dev sentences; opt-in: --tasks=area,next,splice
Fine-tuning: configs/finetune.py (the original's recipe) with --finetune_lr, 6 epochs, batch 32,
seq 64 (area, order, splice) / 128 (next), and the pre-training's dropout (--finetune_dropout;
an encoder pre-trained without dropout loses up to 6 points fine-tuned with 0.1); the dev
accuracy after the last step is reported. --probe_only scores each encoder frozen instead: the
dev accuracy of a logistic regression fit on its top layer's [CLS] vectors of the train set
(results under WORKDIR/probe_only/).

--budgets: fractions of the config's num_train_steps at which ELECTRA (and the MLM, at the same
FLOPs) are fine-tuned; 1 = the whole run. Intermediate budgets are checkpoints of the same runs
(the learning curve of one run, like the paper's Figure 4), so the learning rate there has not
decayed to zero yet. Results: WORKDIR/results.json and the printed table.
benchmarks/learning_table.py reads the results of every variant in WORKDIR and gives the median
over pre-training seeds and the bar (ELECTRA 2 points ahead of the masked LM, both 5 above none).

--variant=NAME with --config overrides (e.g. --config.objective.disc_weight=10) pre-trains the arms
of those settings into WORKDIR/ARM_NAME on the same text and data; fine-tuning results are kept
under WORKDIR/finetune_lr*_epochs*_dropout*/ per fine-tuning setting.
"""
import functools
import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from electra_jax import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position
import tasks  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file('config', os.path.join(ROOT, 'configs', 'cpu_small.py'),
                                          'Pre-training config (ELECTRA); the MLM arm is derived.')
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/electra_learning', 'Where everything goes.')
_BUDGETS = flags.DEFINE_list('budgets', ['1'], 'Fractions of num_train_steps to fine-tune at.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Fine-tuning seeds per task (median reported).')
_ARMS = flags.DEFINE_list('arms', ['electra', 'mlm', 'none'], 'Pre-training arms.')
_TASKS = flags.DEFINE_list('tasks', ['area', 'next'],
                           'Downstream tasks (area, next, order, splice).')
_FINETUNE_LR = flags.DEFINE_float('finetune_lr', 3e-4, 'Fine-tuning learning rate.')
_FINETUNE_EPOCHS = flags.DEFINE_float(
    'finetune_epochs', 6.0, 'Fine-tuning epochs (at 3 every arm was still improving).')
_FINETUNE_HEAD_INIT = flags.DEFINE_enum(
    'finetune_head_init', 'random', ['random', 'probe'],
    "The task head's start (configs/finetune.py head_init): 'probe' fits it on the frozen "
    "encoder's [CLS] vectors first (linear probing, then fine-tuning).")
_PROBE_ONLY = flags.DEFINE_bool(
    'probe_only', False, "No fine-tuning: each encoder's score is the head fit on its frozen "
    "[CLS] vectors (configs/finetune.py probe_only, a linear probe); one seed per pre-trained "
    'encoder (the fit does not depend on it), --seeds random encoders for none.')
_VARIANT = flags.DEFINE_string(
    'variant', '', 'A name for this run\'s --config overrides: its arms go to WORKDIR/ARM_VARIANT '
    'and its results to results_VARIANT.json, beside the text and data of the same workdir.')
_FINETUNE_DROPOUT = flags.DEFINE_float(
    'finetune_dropout', -1.0, 'Fine-tuning dropout (hidden and attention); -1: the pre-training '
    "config's model.dropout_rate (an encoder pre-trained without dropout is fine-tuned without).")

TASK_SEQ_LENGTH = {'area': 64, 'next': 128, 'order': 64, 'splice': 64}


# ---- Pre-training arms at equal FLOPs.

def arm_config(config, arm: str):
  c = ml_collections.ConfigDict(config.to_dict())
  if arm == 'mlm':  # BERT without NSP: the discriminator-size transformer is the masked LM
    c.objective.electra_objective = False
    c.model.untied_generator = False
    c.model.generator_fraction = 1.0
  return c


def step_flops(config) -> float:
  """XLA's FLOP count of one compiled train step (forward, backward, optimizer)."""
  from electra_jax import model as model_lib, objective, optim, train  # pylint: disable=g-import-not-at-top
  model = model_lib.make_pretrainer(config)
  lr = optim.learning_rate_schedule(config.optim, config.num_train_steps)
  tx = optim.make_optimizer(config.optim, config.num_train_steps, lr)
  state = jax.eval_shape(functools.partial(train.create_train_state, model, tx),
                         jax.random.key(0))
  shape = (config.batch_size, config.max_seq_length)
  batch = {k: jax.ShapeDtypeStruct(shape, jnp.int32)
           for k in ('input_ids', 'input_mask', 'segment_ids')}
  step = jax.jit(functools.partial(
      train.train_step, model=model, tx=tx, learning_rate_fn=lr,
      objective_config=config.objective, special=objective.SpecialIds(0, 1, 2, 3),
      max_predictions=objective.max_predictions_per_seq(
          config.objective.mask_prob, config.max_seq_length, config.objective.max_predictions)))
  cost = step.lower(state, batch, jax.random.key(0)).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, list) else cost)['flops'])


def export_at(workdir: str, step: int, config, out_dir: str):
  """The pretrained/ export of checkpoint `step` of a pre-training workdir (for fine-tuning)."""
  from electra_jax import build_data, checkpoint, model as model_lib, optim, train  # pylint: disable=g-import-not-at-top
  if os.path.exists(os.path.join(out_dir, 'config.json')):
    return
  model = model_lib.make_pretrainer(config)
  tx = optim.make_optimizer(config.optim, config.num_train_steps)
  abstract = jax.eval_shape(functools.partial(train.create_train_state, model, tx),
                            jax.random.key(0))
  manager = checkpoint.checkpoint_manager(workdir, config)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  meta = build_data.load_meta(config.data.data_dir)
  checkpoint.export_pretrained(out_dir, jax.device_get(state.params), config, meta.vocab_info())


def eval_metrics(workdir: str, step: int) -> dict:
  path = os.path.join(workdir, 'metrics.jsonl')
  rows = [json.loads(l) for l in open(path)] if os.path.exists(path) else []
  rows = [r for r in rows if r['kind'] == 'eval' and r['step'] == step]
  return {k: v for k, v in rows[-1].items() if k not in ('kind', 'step')} if rows else {}


def pretrain(arm: str, config, run_dir: str):
  """Pre-trains `arm` in `run_dir` to config.num_train_steps (resuming its checkpoint)."""
  from electra_jax import train  # pylint: disable=g-import-not-at-top
  t = time.time()
  result = train.train_and_evaluate(config, run_dir)
  if result.get('stopped'):  # SIGTERM / SIGINT: its checkpoint is saved, the last step's is not
    raise SystemExit(f'learning.py: pre-training of {arm} was stopped ({result["stopped"]}) at '
                     f'step {result["step"]} of {config.num_train_steps}; run the same command '
                     f'again to resume it from {run_dir}')
  print(f'{arm}: pre-trained {config.num_train_steps} steps in {time.time() - t:.0f} s', flush=True)


# ---- Fine-tuning.

def finetune(init_dir: str, model_config, vocab: str, task: str, text_dir: str, workdir: str,
             dropout: float):
  """Fine-tunes from `init_dir` (a pretrained/ dir; '' = random init of `model_config`) with the
  seeds and `dropout`; returns each seed's final dev accuracy."""
  from configs import finetune as finetune_configs  # pylint: disable=g-import-not-at-top
  from electra_jax.finetune import loop  # pylint: disable=g-import-not-at-top
  results_path = os.path.join(workdir, 'results.json')
  if not os.path.exists(results_path):
    c = finetune_configs.get_config()
    c.task = 'custom'
    c.custom.name = task
    c.custom.train_file = os.path.join(text_dir, f'{task}_train.jsonl')
    c.custom.dev_file = os.path.join(text_dir, f'{task}_dev.jsonl')
    c.custom.text_a, c.custom.text_b = (('sentence1', 'sentence2') if task == 'next'
                                        else ('sentence', ''))
    c.custom.metrics = 'accuracy'
    c.max_seq_length = TASK_SEQ_LENGTH[task]
    c.optim.learning_rate = _FINETUNE_LR.value
    c.num_train_epochs = _FINETUNE_EPOCHS.value
    c.head_init = _FINETUNE_HEAD_INIT.value
    c.probe_only = _PROBE_ONLY.value
    c.num_trials = 1 if _PROBE_ONLY.value and init_dir else _SEEDS.value
    c.eval_every_steps = 10**9  # evaluate once, after the last step
    c.predict_test = False
    c.log_every_steps = 10**9
    c.mesh_shape = (1, 1, 1)
    c.model.dropout_rate = c.model.attention_dropout_rate = dropout
    if init_dir:
      c.init_checkpoint = init_dir
    else:
      for key in ('vocab_size', 'embedding_size', 'hidden_size', 'num_layers', 'num_heads',
                  'intermediate_size', 'max_position_embeddings', 'initializer'):
        c.model[key] = model_config[key]
      c.data.vocab = vocab
    stopped = loop.run(c, workdir).get('stopped')
    if stopped:  # SIGTERM / SIGINT: the loop saved where it was; the same command resumes it
      raise SystemExit(f'learning.py: fine-tuning on {task} was stopped ({stopped}) before it '
                       f'finished; run the same command again to resume it from {workdir}')
  with open(results_path) as f:
    results = json.load(f)
  return [s['best']['dev']['accuracy'] for s in results['seeds']]


def main(argv):
  del argv
  host_memory.retain_freed_memory()
  from electra_jax import build_data  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(_WORKDIR.value)
  config = _CONFIG.value
  unknown = [t for t in _TASKS.value if t not in TASK_SEQ_LENGTH]
  if unknown:
    sys.exit(f'error: unknown --tasks {",".join(unknown)}; the tasks are '
             f'{",".join(TASK_SEQ_LENGTH)}')
  budgets = sorted(float(b) for b in _BUDGETS.value)
  unit = budgets[0]
  if any(abs(b / unit - round(b / unit)) > 1e-9 for b in budgets) or budgets[-1] != 1.0:
    sys.exit('error: --budgets must be multiples of the smallest one and end at 1')
  started = time.time()
  dropout = (_FINETUNE_DROPOUT.value if _FINETUNE_DROPOUT.value >= 0
             else config.model.dropout_rate)
  suffix = f'_{_VARIANT.value}' if _VARIANT.value else ''
  # Fine-tuning results are kept per fine-tuning setting (a rerun with others fine-tunes again).
  probed = _FINETUNE_HEAD_INIT.value == 'probe'
  finetune_root = os.path.join(workdir, f'finetune_lr{_FINETUNE_LR.value:g}_epochs'
                                        f'{_FINETUNE_EPOCHS.value:g}_dropout{dropout:g}'
                                        + ('_probehead' if probed else ''))
  finetune_setting = {'lr': _FINETUNE_LR.value, 'epochs': _FINETUNE_EPOCHS.value,
                      'dropout': dropout, **({'head_init': 'probe'} if probed else {})}
  if _PROBE_ONLY.value:  # no fine-tuning: lr, epochs, dropout and head_init play no part
    finetune_root = os.path.join(workdir, 'probe_only')
    finetune_setting = {'probe_only': True}

  text_dir = os.path.join(workdir, 'text')
  text = tasks.write_text(text_dir)
  print(f'text: {text["corpus_mb"]:.1f} MB of pre-training text ({text["pretraining_documents"]} '
        f'documents); tasks: ' + ', '.join(f'{k} {v}' for k, v in text.items()
                                            if k.endswith(('_train', '_dev'))), flush=True)
  config.data.corpus = os.path.join(text_dir, 'corpus.txt')
  config.data.data_dir = os.path.join(workdir, 'data')
  build_data.build_pretraining_data(config, workdir)
  vocab = build_data.load_meta(config.data.data_dir).vocab_path

  # Steps per arm: ELECTRA runs the config's steps; the MLM as many as give the same FLOPs.
  # ELECTRA's count is taken also when only the MLM runs (--arms=mlm), so its steps still match.
  arms = [a for a in _ARMS.value if a != 'none']
  flops = {arm: step_flops(arm_config(config, arm)) for arm in {'electra', *arms}}
  steps = {}
  for arm in arms:
    units = round(1 / unit)
    per_unit = round(config.num_train_steps * unit * flops['electra'] / flops[arm])
    steps[arm] = [per_unit * round(b / unit) for b in budgets]
    steps[arm][-1] = per_unit * units
  for arm in arms:
    print(f'{arm}: {flops[arm] / 1e9:.2f} GFLOP per step (XLA cost analysis), '
          f'{steps[arm][-1]} steps = {flops[arm] * steps[arm][-1]:.3e} FLOPs', flush=True)

  rows = []
  for arm in _ARMS.value:
    if arm == 'none':
      scores = {task: finetune('', config.model, vocab, task, text_dir,
                               os.path.join(finetune_root, f'none{suffix}_{task}'), dropout)
                for task in _TASKS.value}
      rows.append({'arm': 'none', 'budget': 0.0, 'steps': 0, 'flops': 0.0, 'pretrain': {},
                   'finetune': finetune_setting, 'scores': scores})
      continue
    c = arm_config(config, arm)
    c.num_train_steps = steps[arm][-1]
    c.checkpoint_every_steps = steps[arm][0]
    c.eval_every_steps = steps[arm][0]
    c.keep_checkpoints = round(1 / unit)  # every multiple of the smallest budget is saved
    run_dir = os.path.join(workdir, arm + suffix)
    if all(os.path.exists(os.path.join(run_dir, f'export_{step}', 'config.json'))
           for step in steps[arm]):  # pre-trained and exported already (then only fine-tuning)
      print(f'{arm}: reusing the exports in {run_dir}', flush=True)
    else:
      pretrain(arm, c, run_dir)
    for budget, step in zip(budgets, steps[arm]):
      export_dir = os.path.join(run_dir, f'export_{step}')
      export_at(run_dir, step, c, export_dir)
      scores = {task: finetune(export_dir, None, vocab, task, text_dir,
                               os.path.join(finetune_root, f'{arm}{suffix}_{step}_{task}'),
                               dropout)
                for task in _TASKS.value}
      rows.append({'arm': arm, 'budget': budget, 'steps': step, 'flops': flops[arm] * step,
                   'pretrain': eval_metrics(run_dir, step), 'finetune': finetune_setting,
                   'scores': scores})

  how = ('the frozen probe (each seed in brackets: one per pre-trained encoder, '
         f'{_SEEDS.value} random encoders for none)' if _PROBE_ONLY.value else
         f'median over {_SEEDS.value} seeds (each seed in brackets; fine-tuning dropout '
         f'{dropout:g})')
  print(f'\ndev accuracy of {how}; {time.time() - started:.0f} s in all')
  header = '| arm | budget | steps | pre-training FLOPs | held-out disc AUC | MLM acc | ' + \
      ' | '.join(_TASKS.value) + ' |'
  print(header)
  print('|' + '---|' * (header.count('|') - 1))
  for r in rows:
    p = r['pretrain']
    auc = f'{p["disc_auc"]:.3f}' if 'disc_auc' in p else '-'
    acc = f'{p["mlm_accuracy"]:.3f}' if 'mlm_accuracy' in p else '-'
    cells = [f'{np.median(v):.1f} [{" ".join(f"{x:.1f}" for x in v)}]'
             for v in r['scores'].values()]
    print(f'| {r["arm"]} | {r["budget"]:g} | {r["steps"]} | {r["flops"]:.2e} | {auc} | {acc} | '
          + ' | '.join(cells) + ' |')
  # Earlier results of the same workdir and variant (other --tasks, --arms or fine-tuning
  # settings) are kept: a row is one pre-trained encoder fine-tuned one way.
  def key(r):
    return r['arm'], r['steps'], json.dumps(r.get('finetune'), sort_keys=True)
  results_path = os.path.join(workdir, f'results{suffix}.json')
  if os.path.exists(results_path):
    with open(results_path) as f:
      merged = {key(r): r for r in json.load(f)['rows']}
    for r in rows:
      earlier = merged.get(key(r), {'scores': {}})
      merged[key(r)] = {**r, 'scores': {**earlier['scores'], **r['scores']}}
    rows = list(merged.values())
  with open(results_path + '.tmp', 'w') as f:
    json.dump({'config': config.to_dict(), 'text': text, 'flops_per_step': flops, 'rows': rows,
               'seconds': time.time() - started}, f, indent=2)
  os.replace(results_path + '.tmp', results_path)


if __name__ == '__main__':
  app.run(main)
