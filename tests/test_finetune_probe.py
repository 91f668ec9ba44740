"""head_init='probe' (electra_jax/finetune/probe.py): the head fit on frozen features is the
regularized logistic regression (or ridge regression) it says it is, on raw, uncentered features."""
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import linear_model

from electra_jax.finetune import probe


def _features(n=240, h=12, seed=0):
  rng = np.random.default_rng(seed)
  # Far from zero, as an encoder's [CLS] vectors are (norm ~11 in benchmarks/learning.py's runs).
  return rng.normal(size=(n, h)) * 2.0 + rng.normal(size=h) * 5.0, rng


def _softmax(z):
  z = np.exp(z - z.max(1, keepdims=True))
  return z / z.sum(1, keepdims=True)


def test_classification_head_is_sklearns_multinomial_logistic_regression():
  x, rng = _features()
  y = (x[:, :3] @ rng.normal(size=(3, 3))).argmax(1)
  y = np.where(rng.random(len(y)) < 0.2, rng.integers(0, 3, len(y)), y)  # not separable
  l2 = 1e-2
  head, used = probe.fit_head(x, y, 3, l2=l2)
  assert used == l2 and head['kernel'].shape == (12, 3) and head['bias'].shape == (3,)
  # sklearn minimizes C * sum(CE) + |W|^2 / 2; ours mean(CE) + l2 / 2 |W|^2: C = 1 / (l2 N).
  reference = linear_model.LogisticRegression(C=1 / (l2 * len(x)), tol=1e-10, max_iter=10000)
  reference.fit(x, y)
  ours = _softmax(x @ head['kernel'] + head['bias'])
  theirs = reference.predict_proba(x)
  np.testing.assert_allclose(ours, theirs, atol=1e-4)
  assert np.abs(ours - _softmax(np.zeros_like(ours))).max() > 0.3  # it fit something


def test_regression_head_is_ridge_regression():
  x, rng = _features()
  y = x @ rng.normal(size=12) * 0.1 + rng.normal(size=len(x))
  l2 = 1e-1
  head, _ = probe.fit_head(x, y, 1, regression=True, l2=l2)
  # mean((x w + b - y)^2) + l2 / 2 |w|^2, b free: (2 Xc'Xc / N + l2 I) w = 2 Xc'yc / N.
  xc, yc = x - x.mean(0), y - y.mean()
  w = np.linalg.solve(2 * xc.T @ xc / len(x) + l2 * np.eye(12), 2 * xc.T @ yc / len(x))
  b = y.mean() - x.mean(0) @ w
  np.testing.assert_allclose(head['kernel'][:, 0], w, rtol=1e-3, atol=1e-4)
  assert head['bias'][0] == pytest.approx(b, rel=1e-3, abs=1e-3)


def test_cross_validation_chooses_from_the_grid_by_held_out_accuracy():
  """A label that is one feature's sign, among 11 noise features, on 60 examples: the chosen head
  reads it on new examples."""
  x, rng = _features(n=60)
  y = (x[:, 0] > np.median(x[:, 0])).astype(int)
  head, l2 = probe.fit_head(x, y, 2)
  assert l2 in probe.L2_GRID
  x_new, _ = _features(n=400, seed=1)
  y_new = (x_new[:, 0] > np.median(x[:, 0])).astype(int)
  assert np.mean((x_new @ head['kernel'] + head['bias']).argmax(1) == y_new) > 0.85


def test_fewer_examples_than_folds_is_leave_one_out():
  """3 examples, 5 folds: each example is held out once (no empty fold, whose error would be 0/0),
  so every l2's error is a count of 3 held-out mistakes over 3."""
  x, _ = _features(n=3)
  x = jnp.asarray(x - x.mean(0), jnp.float32)
  errors = probe.cross_validation_errors(x, jnp.asarray([0, 1, 1]), 2)
  assert list(errors) == list(probe.L2_GRID)
  for error in errors.values():
    assert np.isfinite(error) and min(abs(error * 3 - k) for k in range(4)) < 1e-5
