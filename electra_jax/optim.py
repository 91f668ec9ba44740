"""Optimizer: the original's AdamW (no bias correction) and learning-rate schedule, in optax.

Reference quirks kept as the default (each with its textbook variant as an option):
- Adam without bias correction (`optim.bias_correction=False`); textbook AdamW with True.
- LR = linear decay from step 0 to `num_train_steps`, multiplied by min(1, step / warmup): warmup
  and decay overlap (`optim.schedule='electra'`); 'warmup_linear' decays only after warmup.
- Weight decay 0.01 on everything except LayerNorm parameters and biases; global-norm clip 1.0.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(optim_config, num_train_steps: int,
                           warmup_steps: float | None = None) -> optax.Schedule:
  """`warmup_steps` (default optim.warmup_steps) may be fractional, as the original's fine-tuning
  warmup (0.1 x steps, a float) is; 'warmup_linear' rounds it down."""
  o = optim_config
  warmup_steps = o.warmup_steps if warmup_steps is None else warmup_steps
  if o.schedule == 'electra':
    decay = optax.polynomial_schedule(o.learning_rate, o.end_learning_rate, power=1.0,
                                      transition_steps=num_train_steps)

    def schedule(step):
      warmup = jnp.minimum(1.0, step / max(warmup_steps, 1)) if warmup_steps else 1.0
      return decay(step) * warmup
    return schedule
  if o.schedule == 'warmup_linear':
    warmup_steps = int(warmup_steps)
    return optax.join_schedules([
        optax.linear_schedule(0.0, o.learning_rate, warmup_steps),
        optax.linear_schedule(o.learning_rate, o.end_learning_rate,
                              max(num_train_steps - warmup_steps, 1))], [warmup_steps])
  raise ValueError(f"optim.schedule must be 'electra' or 'warmup_linear', got {o.schedule!r}")


class ScaleByAdamNoBiasCorrectionState(NamedTuple):
  mu: optax.Updates
  nu: optax.Updates


def scale_by_adam_no_bias_correction(b1=0.9, b2=0.999, eps=1e-6) -> optax.GradientTransformation:
  """m / (sqrt(v) + eps) with raw (uncorrected) moments, as the original AdamWeightDecayOptimizer.

  Early steps are therefore smaller than textbook Adam's: at step 1 the update is
  (1-b1) g / ((1-b2)^0.5 |g| + eps) ~ 3.2 sign(g) instead of sign(g).
  """

  def init_fn(params):
    zeros = lambda p: jnp.zeros_like(p, dtype=jnp.float32)
    return ScaleByAdamNoBiasCorrectionState(jax.tree.map(zeros, params),
                                            jax.tree.map(zeros, params))

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)
    updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    return updates, ScaleByAdamNoBiasCorrectionState(mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def weight_decay_mask(params):
  """True for the parameters that get weight decay: Dense kernels and embedding tables.

  LayerNorm scale/bias, Dense biases and the generator's output_bias are excluded.
  """
  def decays(path, _):
    return getattr(path[-1], 'key', None) in ('kernel', 'embedding')
  return jax.tree_util.tree_map_with_path(decays, params)


def layerwise_lr_factors(params, num_layers: int, decay: float, original_off_by_one: bool = False):
  """Fine-tuning learning-rate multiplier of each parameter: decay ** (depth from the top).

  The task head (every top-level key other than `embeddings` and `discriminator`) gets decay**0,
  encoder layer i (`discriminator/layer_i`) decay**(num_layers - i), so the top layer gets decay**1,
  and the embeddings (with `discriminator/embeddings_project`) decay**(num_layers + 1), the deepest.
  `original_off_by_one` reproduces the original code, which still counts the removed pooler: every
  encoder layer and the embeddings get one more factor of decay (top layer decay**2).
  """
  extra = 1 if original_off_by_one else 0

  def factor(path, _):
    keys = [getattr(k, 'key', str(k)) for k in path]
    if keys[0] == 'embeddings' or keys[:2] == ['discriminator', 'embeddings_project']:
      depth_from_top = num_layers + 1 + extra
    elif keys[0] == 'discriminator':
      if not keys[1].startswith('layer_'):
        raise ValueError(f'unexpected encoder parameter {"/".join(keys)}')
      depth_from_top = num_layers - int(keys[1][len('layer_'):]) + extra
    else:
      depth_from_top = 0
    return decay ** depth_from_top
  return jax.tree_util.tree_map_with_path(factor, params)


def scale_by_factors(factors) -> optax.GradientTransformation:
  """Multiplies each update by a fixed per-parameter factor (a tree like the params)."""

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, f: u * jnp.asarray(f, u.dtype), updates, factors), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def make_optimizer(optim_config, num_train_steps: int, learning_rate_fn=None, lr_factors=None):
  """clip(global norm) -> Adam(-ish) -> + weight_decay * param -> * -lr [* per-parameter factor].

  `optim.name='lamb'`: clip(global norm) -> optax.lamb (textbook Adam moments, the same decay mask,
  then each parameter's update scaled by the trust ratio ||param|| / ||update||, 1 where either is
  zero) for large batches. `lr_factors` (fine-tuning, `layerwise_lr_factors`) scale each
  parameter's whole update, weight decay included, as a per-parameter learning rate does in the
  original.
  """
  o = optim_config
  lr = learning_rate_fn or learning_rate_schedule(o, num_train_steps)
  parts = []
  if o.clip_norm and o.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(o.clip_norm))
  name = o.get('name', 'adamw')
  if name == 'lamb':
    parts.append(optax.lamb(lr, o.b1, o.b2, o.eps, weight_decay=o.weight_decay,
                            mask=weight_decay_mask))
  elif name == 'adamw':
    adam = (optax.scale_by_adam(o.b1, o.b2, o.eps) if o.bias_correction
            else scale_by_adam_no_bias_correction(o.b1, o.b2, o.eps))
    parts += [adam, optax.add_decayed_weights(o.weight_decay, mask=weight_decay_mask),
              optax.scale_by_learning_rate(lr)]
  else:
    raise ValueError(f"optim.name must be 'adamw' or 'lamb', got {name!r}")
  if lr_factors is not None:
    parts.append(scale_by_factors(lr_factors))
  return optax.chain(*parts)
