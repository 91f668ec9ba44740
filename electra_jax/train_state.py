"""The train state and its guard against non-finite steps, shared by pre-training (train.py) and
fine-tuning (finetune/loop.py).

A step with a non-finite loss or gradient norm is not applied, on device (`apply_if_finite`); the
host reads the record only where it waits for the device anyway and stops the run once too many
came in a row (`check_finite`), so no NaN reaches the weights or a checkpoint.
"""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from electra_jax.errors import UserError


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  nonfinite: Any  # steps not applied for a non-finite loss or gradient (new_nonfinite_record)


# What a step checks (apply_if_finite); bit i of TrainState.nonfinite['what'] stands for key i.
NONFINITE_KEYS = ('loss', 'mlm_loss', 'disc_loss', 'grad_norm')


def new_nonfinite_record():
  """count: steps not applied; streak: of them in a row, up to now; step, what: the latest one's
  step number and which of NONFINITE_KEYS were not finite (bits)."""
  return {k: jnp.zeros((), jnp.int32) for k in ('count', 'streak', 'step', 'what')}  # 4 buffers


def nonfinite_limit(config) -> int:
  """Non-finite steps in a row that end the run: 1 for nan_policy 'stop'."""
  return 1 if config.nan_policy == 'stop' else config.max_consecutive_nonfinite


def apply_if_finite(state: TrainState, grads, checked: dict, tx, max_in_a_row: int) -> TrainState:
  """The next state: the update of `grads` applied if every value in `checked` (losses, gradient
  norm) is finite and fewer than `max_in_a_row` steps in a row were not.

  Otherwise params and optimizer state stay as they were and state.nonfinite records the step. All
  on device (jnp.where inside the jitted step): the host looks at the record only when it syncs
  anyway (check_finite). Once `max_in_a_row` is reached nothing is applied any more, so the run the
  host then stops is still at its last good state. The step counter always advances: it picks the
  batch and the randomness, and a skipped step's batch is not seen again.
  """
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  what = sum((~jnp.isfinite(checked[k])).astype(jnp.int32) << i
             for i, k in enumerate(NONFINITE_KEYS) if k in checked)
  n = state.nonfinite
  frozen = n['streak'] >= max_in_a_row
  ok = (what == 0) & ~frozen
  bad = (what != 0) & ~frozen
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
  nonfinite = {'count': n['count'] + bad, 'streak': jnp.where(ok, 0, n['streak'] + bad),
               'step': jnp.where(bad, state.step + 1, n['step']),
               'what': jnp.where(bad, what, n['what'])}
  return TrainState(state.step + 1, keep(params, state.params), keep(opt_state, state.opt_state),
                    nonfinite)


def check_finite(nonfinite, limit: int, manager) -> int:
  """Stops the run (UserError) once `limit` steps in a row had a non-finite loss or gradient norm;
  returns how many steps were not applied so far. A fetch of 4 integers, made only where the host
  waits for the device anyway (log, eval and checkpoint steps)."""
  n = {k: int(v) for k, v in jax.device_get(nonfinite).items()}
  if n['streak'] < limit:
    return n['count']
  what = ', '.join(k for i, k in enumerate(NONFINITE_KEYS) if n['what'] >> i & 1)
  in_a_row = f' ({limit} steps in a row, nan_policy=skip_step)' if limit > 1 else ''
  latest = manager.latest_step()
  saved = (f'the latest checkpoint in {manager.directory} is {latest}' if latest is not None
           else f'no checkpoint was written to {manager.directory}')
  hint = '' if limit > 1 else ', or set --config.nan_policy=skip_step'
  raise UserError(f'non-finite {what} at step {n["step"]}{in_a_row}: stopped, and nothing after '
                  f'the last good step was saved ({saved}). Lower optim.learning_rate{hint}')
