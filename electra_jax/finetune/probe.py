"""A task head fit on frozen features before fine-tuning (`--config.head_init=probe`), or instead
of it (`--config.probe_only=true`: that head's score is the result, a linear probe).

Linear probing, then fine-tuning (LP-FT; Kumar et al. 2022, "Fine-Tuning can Distort Pretrained
Features and Underperform Out-of-Distribution"): the pre-trained encoder reads every training
example once, and the classification (or regression) head is fit on the [CLS] vectors it sees:
softmax cross-entropy (squared error for regression), averaged over the examples, plus
l2 / 2 * |kernel|^2 (the bias unpenalized), minimized by L-BFGS (at most LBFGS_STEPS steps). l2 is
picked from L2_GRID by 5-fold cross-validation on the training examples (held-out accuracy; for
regression, squared error), then the head is refit on all of them. Fine-tuning then starts from
that head instead of a random one.

Why: a random head's first gradients flow back into the encoder while the head is still noise, and
can wreck what a linear classifier could already read from it. In benchmarks/learning.py the masked
LM's encoder loses that way what its frozen [CLS] holds; ELECTRA's does not (benchmarks/README.md,
Diagnosis). The original always starts from a random head, which stays the default.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

L2_GRID = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
FOLDS = 5
LBFGS_STEPS = 500


def cls_features(params, batch, *, model):
  """{'cls': [B, H] float32}: the encoder's [CLS] vectors, the classification head's input."""
  _, state = model.apply({'params': params}, batch['input_ids'], batch['input_mask'],
                         batch['segment_ids'], deterministic=True,
                         capture_intermediates=lambda m, name: (m.name == 'discriminator' and
                                                                name == '__call__'),
                         mutable=['intermediates'])
  return {'cls': state['intermediates']['discriminator']['__call__'][0][:, 0].astype(jnp.float32)}


def _loss(kernel_bias, x, y, weights, l2, regression: bool):
  kernel, bias = kernel_bias
  out = x @ kernel + bias
  if regression:
    per_example = (out[:, 0] - y) ** 2
  else:
    per_example = optax.softmax_cross_entropy_with_integer_labels(out, y)
  return (jnp.sum(weights * per_example) / jnp.maximum(jnp.sum(weights), 1.0)
          + 0.5 * l2 * jnp.sum(kernel ** 2))


@functools.partial(jax.jit, static_argnames=('num_outputs', 'regression'))
def _fit(x, y, weights, l2, num_outputs: int, regression: bool):
  """(kernel, bias) minimizing _loss, by L-BFGS from zeros; weights 0 leave an example out."""
  loss = lambda p: _loss(p, x, y, weights, l2, regression)
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)
  params = (jnp.zeros((x.shape[1], num_outputs), x.dtype), jnp.zeros((num_outputs,), x.dtype))

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
    return optax.apply_updates(params, updates), state

  def running(carry):  # until converged: steps past it would divide by a vanishing curvature
    _, state = carry
    count = optax.tree_utils.tree_get(state, 'count')
    grad = optax.tree_utils.tree_get(state, 'grad')
    return (count == 0) | ((count < LBFGS_STEPS) & (optax.tree.norm(grad) > 1e-6))

  params, _ = jax.lax.while_loop(running, step, (params, opt.init(params)))
  return params


def _held_out_error(params, x, y, held_out, regression: bool):
  out = x @ params[0] + params[1]
  wrong = (out[:, 0] - y) ** 2 if regression else (jnp.argmax(out, -1) != y).astype(x.dtype)
  return jnp.sum(held_out * wrong) / jnp.sum(held_out)


def cross_validation_errors(x, y, num_outputs: int, regression: bool = False) -> dict:
  """{l2: held-out error} for each l2 of L2_GRID: the mean over FOLDS folds (fewer examples than
  folds: leave-one-out) of the error rate (squared error for regression) on the fold's examples,
  of the head fit on the others. x: [N, H] float32 (centered), y: [N]."""
  n = len(x)
  folds = min(FOLDS, n)
  fold = np.random.default_rng(0).permutation(n) % folds
  held_out = jnp.asarray(np.stack([fold == f for f in range(folds)]), jnp.float32)
  fit_folds = jax.vmap(functools.partial(_fit, num_outputs=num_outputs, regression=regression),
                       in_axes=(None, None, 0, None))  # one fit per fold, its examples held out
  error = jax.vmap(functools.partial(_held_out_error, regression=regression),
                   in_axes=(0, None, None, 0))
  return {l2: float(jnp.mean(error(fit_folds(x, y, 1.0 - held_out, l2), x, y, held_out)))
          for l2 in L2_GRID}


def fit_head(features, labels, num_outputs: int, regression: bool = False, l2=None):
  """({'kernel': [H, num_outputs], 'bias': [num_outputs]}, l2): the head fit on features [N, H],
  with `l2`, or (None) the one cross-validation chose. Fit on centered features (better conditioned
  for L-BFGS), then moved back: bias - mean @ kernel gives the same outputs on the raw features."""
  features = np.asarray(features, np.float64)
  mean = features.mean(0)
  x = jnp.asarray(features - mean, jnp.float32)
  y = jnp.asarray(labels, jnp.float32 if regression else jnp.int32)
  if l2 is None:
    errors = cross_validation_errors(x, y, num_outputs, regression)
    l2 = min(L2_GRID, key=errors.get)  # the first of equal errors: the strongest penalty
  kernel, bias = _fit(x, y, jnp.ones((len(x),), jnp.float32), l2, num_outputs=num_outputs,
                      regression=regression)
  kernel = np.asarray(kernel, np.float64)
  bias = np.asarray(bias, np.float64) - mean @ kernel
  return {'kernel': kernel.astype(np.float32), 'bias': bias.astype(np.float32)}, l2
