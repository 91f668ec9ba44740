"""Where a run's metrics go: console lines, TensorBoard scalars and WORKDIR/metrics.jsonl.

The one writer of those formats, for pre-training (train.py) and fine-tuning (finetune/loop.py).
"""
import json

import jax

from electra_jax import paths


def complete_row(line: str) -> bool:
  """False for the half-written last line a killed run can leave behind."""
  try:
    json.loads(line)
    return line.endswith('\n')
  except ValueError:
    return False


class MetricsLog:
  """Progress lines on the console, scalars to TensorBoard, and metrics.jsonl (process 0 only).

  Pre-training has one per run, fine-tuning one per seed. A resumed run keeps only the rows up
  to `resume_step`.
  """

  def __init__(self, workdir, resume_step):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    from flax.metrics import tensorboard  # pylint: disable=g-import-not-at-top
    self.tb = tensorboard.SummaryWriter(paths.join(workdir, 'tensorboard'))
    self.path = paths.join(workdir, 'metrics.jsonl')
    # A resumed run rewrites what the killed run logged after its last checkpoint.
    kept = []
    if paths.exists(self.path):
      with paths.open(self.path) as f:
        kept = [l for l in f if complete_row(l) and json.loads(l)['step'] <= resume_step]
    with paths.open(self.path, 'w') as f:
      f.writelines(kept)

  def write(self, kind, step, metrics, line=None):
    if not self.active:
      return
    if line:
      print(line, flush=True)
    for k, v in metrics.items():
      self.tb.scalar(f'{kind}/{k}', v, step)
    self.tb.flush()
    with paths.open(self.path, 'a') as f:
      f.write(json.dumps({'kind': kind, 'step': step, **metrics}) + '\n')
