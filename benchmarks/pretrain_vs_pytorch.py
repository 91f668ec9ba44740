r"""Our jitted pre-training step against the same step in HF transformers + PyTorch, in one run.

  python benchmarks/pretrain_vs_pytorch.py --config=configs/small.py --config.batch_size=32
      [--rounds=4 --steps=3] [--peer=false] [--matmul_size=2048] [--retain_freed_memory=false]

Ours: train.py's step (compile excluded). The peer: ElectraForMaskedLM (generator) and
ElectraForPreTraining (discriminator) of the same sizes, the generator using the discriminator's
embedding module (word/position/type embeddings and their LayerNorm) and its output layer tied to the
word embeddings; the same masking (85% [MASK] / 15% kept, same max_predictions), generator logits at
the masked positions only (as ours and the reference; HF's stock forward would compute all 128),
sampling without gradient by the same method as ours (config.objective.sampler: inverse CDF, as
softmax + cumsum + searchsorted, or Gumbel-max), loss = mlm + 50 x disc, AdamW (decay off for
LayerNorm/bias) + global-norm clip 1.0, dropout as the config says. Eager PyTorch on as many
threads as cores, in a child process (in-process with XLA it ran 4-5x slower than alone). Both
processes start with host_memory.retain_freed_memory(), as main.py does for training.

After one untimed round each, the two are timed in alternating rounds (ours, peer, ours, ...) so
that load from other jobs on a shared machine hits both alike; the tables give the median and the
best round. MFU = analytic training
FLOPs per step (`train_flops`) / step time / peak, the peak being this machine's fp32 matmul rate,
measured here with a large jnp.dot (and torch.matmul).
"""
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

import train_step as train_step_bench  # benchmarks/ is the script's directory, hence on sys.path
from electra_jax import host_memory
from electra_jax import model as model_lib

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/small.py', 'configs/*.py file.',
                                          lock_config=True)
_ROUNDS = flags.DEFINE_integer('rounds', 4, 'Alternating timing rounds (ours, then the peer).')
_STEPS = flags.DEFINE_integer('steps', 3, 'Steps per round for each side.')
_PEER = flags.DEFINE_bool('peer', True, 'Also time the HF transformers PyTorch step.')
_RETAIN = flags.DEFINE_bool('retain_freed_memory', True,
                            'host_memory.retain_freed_memory() in both processes, as main.py does.')
_MATMUL_SIZE = flags.DEFINE_integer('matmul_size', 2048, 'n of the n x n x n peak matmul.')
_PEER_WORKER = flags.DEFINE_bool('peer_worker', False, 'Internal: be the PyTorch process.')


# ---------------------------------------------------------------------------------------------------
# FLOPs: multiply-adds count 2; backward = 2 x forward, so training = 3 x forward.


def encoder_forward_flops(size: model_lib.TransformerSize, embedding_size, batch, seq_len):
  tokens = batch * seq_len
  h, f = size.hidden_size, size.intermediate_size
  per_layer = (2 * tokens * h * 3 * h  # query, key, value
               + 2 * 2 * batch * seq_len * seq_len * h  # q.k^T and probs.v, all heads together
               + 2 * tokens * h * h  # attention output
               + 2 * 2 * tokens * h * f)  # intermediate + output
  project = 2 * tokens * embedding_size * h if embedding_size != h else 0
  return project + size.num_layers * per_layer


def train_flops(config, num_predictions):
  """Analytic FLOPs of one training step, by part (forward x 3); embedding lookups count 0."""
  m = config.model
  b, t = config.batch_size, config.max_seq_length
  gen, disc = model_lib.generator_size(m), model_lib.discriminator_size(m)
  masked = b * num_predictions  # generator logits only at the masked positions
  forward = {
      'generator': encoder_forward_flops(gen, m.embedding_size, b, t),
      'generator_head': (2 * masked * gen.hidden_size * m.embedding_size
                         + 2 * masked * m.embedding_size * m.vocab_size),
      'discriminator': encoder_forward_flops(disc, m.embedding_size, b, t),
      'discriminator_head': 2 * b * t * disc.hidden_size * (disc.hidden_size + 1),
  }
  return {k: 3 * v for k, v in forward.items()}


def jax_matmul_peak(n, repeats=5, trials=3):
  """Best fp32 FLOP/s of an n x n x n jnp.dot (jitted, warm)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  dot = jax.jit(lambda x, y: jnp.dot(x, y, precision=jax.lax.Precision.HIGHEST))
  jax.block_until_ready(dot(a, a))
  best = 0.0
  for _ in range(trials):
    t0 = time.perf_counter()
    for _ in range(repeats):
      out = dot(a, a)
    jax.block_until_ready(out)
    best = max(best, 2 * n**3 * repeats / (time.perf_counter() - t0))
  return best


def torch_matmul_peak(n, repeats=5, trials=3):
  import torch  # pylint: disable=g-import-not-at-top
  a = torch.randn(n, n)
  torch.matmul(a, a)
  best = 0.0
  for _ in range(trials):
    t0 = time.perf_counter()
    for _ in range(repeats):
      torch.matmul(a, a)
    best = max(best, 2 * n**3 * repeats / (time.perf_counter() - t0))
  return best


# ---------------------------------------------------------------------------------------------------
# The peer: HF transformers ELECTRA in PyTorch, doing what electra_jax.objective.electra_loss does.


class TorchPeer:
  """One ELECTRA pre-training step in PyTorch (eager), on the same batch as ours."""

  def __init__(self, config, batch, num_predictions, special):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    self.torch = torch
    torch.manual_seed(0)
    m = config.model

    def electra_config(size):
      return transformers.ElectraConfig(
          vocab_size=m.vocab_size, embedding_size=m.embedding_size, hidden_size=size.hidden_size,
          num_hidden_layers=size.num_layers, num_attention_heads=size.num_heads,
          intermediate_size=size.intermediate_size, hidden_act='gelu',
          hidden_dropout_prob=m.dropout_rate, attention_probs_dropout_prob=m.attention_dropout_rate,
          max_position_embeddings=m.max_position_embeddings, type_vocab_size=m.type_vocab_size,
          layer_norm_eps=m.layer_norm_eps, initializer_range=m.initializer_range)

    self.disc = transformers.ElectraForPreTraining(
        electra_config(model_lib.discriminator_size(m)))
    self.gen = transformers.ElectraForMaskedLM(electra_config(model_lib.generator_size(m)))
    # Shared embeddings (incl. their LayerNorm), generator output tied to the word embeddings.
    self.gen.electra.embeddings = self.disc.electra.embeddings
    self.gen.generator_lm_head.weight = self.disc.electra.embeddings.word_embeddings.weight
    self.disc.train()
    self.gen.train()
    self.attn_implementation = self.disc.config._attn_implementation  # pylint: disable=protected-access

    params, seen = {}, set()
    for prefix, model in (('disc.', self.disc), ('gen.', self.gen)):
      for name, p in model.named_parameters():
        if id(p) not in seen:  # the shared embeddings count once
          seen.add(id(p))
          params[prefix + name] = p
    no_decay = [p for n, p in params.items() if 'LayerNorm' in n or n.endswith('bias')]
    decay = [p for n, p in params.items() if not ('LayerNorm' in n or n.endswith('bias'))]
    self.params = list(params.values())
    o = config.optim
    self.opt = torch.optim.AdamW(
        [{'params': decay, 'weight_decay': o.weight_decay}, {'params': no_decay, 'weight_decay': 0.0}],
        lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps)
    self.clip_norm = o.clip_norm
    self.mask_prob = config.objective.mask_prob
    self.sampler = config.objective.sampler
    self.temperature = config.objective.temperature
    self.disc_weight, self.gen_weight = config.objective.disc_weight, config.objective.gen_weight
    self.num_predictions = num_predictions
    self.special = special
    self.ids, self.input_mask, self.segment_ids = (
        torch.tensor(np.array(batch[k]), dtype=torch.long)
        for k in ('input_ids', 'input_mask', 'segment_ids'))

  def num_params(self):
    return sum(p.numel() for p in self.params)

  def _mask(self, ids, input_mask):
    """objective.mask_tokens in torch: top-k of uniform scores over the candidate positions."""
    torch, s, p = self.torch, self.special, self.num_predictions
    candidates = ((input_mask > 0) & (ids != s.pad_id) & (ids != s.cls_id) & (ids != s.sep_id)
                  & (ids != s.mask_id))
    scores = torch.where(candidates, torch.rand(ids.shape), torch.tensor(-1.0))
    top_scores, positions = scores.topk(p, dim=1)
    num_to_predict = torch.clamp(torch.round(input_mask.sum(1).float() * self.mask_prob).long(),
                                 1, p)
    used = (torch.arange(p)[None, :] < num_to_predict[:, None]) & (top_scores >= 0)
    positions = torch.where(used, positions, 0)
    originals = ids.gather(1, positions)
    masked_lm_ids = torch.where(used, originals, 0)
    to_mask_token = used & (torch.rand(used.shape) < 0.85)
    # Unused slots point at position 0 and write back its own id: harmless duplicates.
    masked_ids = ids.scatter(1, positions, torch.where(to_mask_token, s.mask_id, originals))
    return masked_ids, positions, masked_lm_ids, used, originals

  def step(self):
    torch, F = self.torch, self.torch.nn.functional
    ids, input_mask, segment_ids = self.ids, self.input_mask, self.segment_ids
    masked_ids, positions, masked_lm_ids, used, originals = self._mask(ids, input_mask)
    weights = used.float()

    # Generator: encoder, then its head and the tied output layer at the masked positions only.
    hidden = self.gen.electra(masked_ids, attention_mask=input_mask,
                              token_type_ids=segment_ids).last_hidden_state
    at_masked = hidden.gather(1, positions[:, :, None].expand(-1, -1, hidden.shape[-1]))
    logits = self.gen.generator_lm_head(self.gen.generator_predictions(at_masked)).float()
    per_slot = F.cross_entropy(logits.flatten(0, 1), masked_lm_ids.flatten(), reduction='none')
    mlm_loss = (per_slot * weights.flatten()).sum() / (weights.sum() + 1e-6)

    # Sampling in float32, no gradient, by our config's method; corrupted ids and labels.
    with torch.no_grad():
      scaled = logits / self.temperature
      if self.sampler == 'gumbel':
        uniform = torch.rand(logits.shape)
        gumbel = -torch.log(-torch.log(uniform + 1e-9) + 1e-9)
        sampled = torch.argmax(scaled + gumbel, dim=-1)
      else:  # inverse CDF: one uniform per slot, PyTorch's own cumsum and searchsorted
        cdf = torch.softmax(scaled, dim=-1).cumsum(dim=-1)
        target = torch.rand(cdf.shape[:-1] + (1,)) * cdf[..., -1:]
        sampled = torch.searchsorted(cdf, target, right=True)[..., 0].clamp(max=cdf.shape[-1] - 1)
      corrupted = ids.scatter(1, positions, torch.where(used, sampled, originals))
      labels = (corrupted != ids).float()

    disc_logits = self.disc(corrupted, attention_mask=input_mask, token_type_ids=segment_ids).logits
    token_weights = input_mask.float()
    per_token = F.binary_cross_entropy_with_logits(disc_logits.float(), labels, reduction='none')
    disc_loss = (per_token * token_weights).sum() / (token_weights.sum() + 1e-6)

    loss = self.gen_weight * mlm_loss + self.disc_weight * disc_loss
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    if self.clip_norm:
      torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
    self.opt.step()
    return loss.item()


def peer_worker(config):
  """The PyTorch side, in its own process: reads a step count per line, runs that many steps,
  answers 'seconds loss'. A separate process because, in one process with XLA, PyTorch's steps were
  4-5x slower than alone (2.4 s alone vs 10-16 s interleaved, ELECTRA-Small batch 32)."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  peer = TorchPeer(config, train_step_bench.random_batch(config),
                   train_step_bench.max_predictions(config), train_step_bench.SPECIAL)
  loss = peer.step()  # warm-up (allocator, oneDNN primitives)
  print(f'ready {peer.num_params()} {torch.__version__} {torch.get_num_threads()} '
        f'{peer.attn_implementation} {torch_matmul_peak(_MATMUL_SIZE.value)}', flush=True)
  for line in sys.stdin:
    command = line.split()
    if command[0] == 'peak':
      print(torch_matmul_peak(_MATMUL_SIZE.value), flush=True)
      continue
    t0 = time.perf_counter()
    for _ in range(int(command[0])):
      loss = peer.step()
    print(f'{time.perf_counter() - t0} {loss}', flush=True)


class PeerProcess:
  """This script again with --peer_worker (same flags, so the same config and batch)."""

  def __init__(self):
    self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--peer_worker']
                                 + sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
    ready = self._read().split()
    if not ready or ready[0] != 'ready':
      raise RuntimeError(f'the PyTorch process did not start: {ready}')
    self.num_params, self.torch_version, self.threads = int(ready[1]), ready[2], int(ready[3])
    self.attn_implementation, self.peak = ready[4], float(ready[5])

  def _read(self):
    return self.proc.stdout.readline()

  def steps(self, n):
    """Runs n steps there; returns (seconds per step, last loss)."""
    self.proc.stdin.write(f'{n}\n')
    self.proc.stdin.flush()
    seconds, loss = self._read().split()
    return float(seconds) / n, float(loss)

  def matmul_peak(self):
    self.proc.stdin.write('peak\n')
    self.proc.stdin.flush()
    return float(self._read())

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


# ---------------------------------------------------------------------------------------------------


def main(_):
  # Both sides, first thing (the peer is this script again): glibc keeps freed memory for reuse,
  # as main.py sets it up for training (electra_jax/host_memory.py).
  retained = _RETAIN.value and host_memory.retain_freed_memory()
  if _PEER_WORKER.value:
    peer_worker(_CONFIG.value)
    return
  config = _CONFIG.value
  cores = os.cpu_count()
  load_before = os.getloadavg()
  step, state, batch, key = train_step_bench.build_step(config)
  num_predictions = train_step_bench.max_predictions(config)
  tokens = config.batch_size * config.max_seq_length
  flops = train_flops(config, num_predictions)
  flops_per_step = sum(flops.values())

  t0 = time.perf_counter()
  state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  num_params = sum(x.size for x in jax.tree.leaves(state.params))

  peer = PeerProcess() if _PEER.value else None
  peak = jax_matmul_peak(_MATMUL_SIZE.value)
  torch_peak = peer.peak if peer else None

  # One untimed round each: the first steps dispatched back to back still grow the heap (with
  # retain_freed_memory: 0.8M page faults, 2.3 s/step instead of 1.5 in the first 3 steps).
  for _ in range(_STEPS.value):
    state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  if peer:
    peer.steps(_STEPS.value)
  ours_s, peer_s = [], []
  for _ in range(_ROUNDS.value):
    t0 = time.perf_counter()
    for _ in range(_STEPS.value):
      state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)
    ours_s.append((time.perf_counter() - t0) / _STEPS.value)
    if peer:
      seconds, peer_loss = peer.steps(_STEPS.value)
      peer_s.append(seconds)
  # The peak again after the rounds: the best of both, so that a busy moment doesn't lower it.
  peak = max(peak, jax_matmul_peak(_MATMUL_SIZE.value))
  if peer:
    torch_peak = max(torch_peak, peer.matmul_peak())
    peer.close()
  load_after = os.getloadavg()

  m = config.model
  print(f'config: batch {config.batch_size} x seq {config.max_seq_length}, vocab {m.vocab_size}, '
        f'disc {model_lib.discriminator_size(m)}, gen {model_lib.generator_size(m)}, '
        f'dtype {m.dtype}, dropout {m.dropout_rate}, attention dropout {m.attention_dropout_rate}, '
        f'{num_predictions} predictions/seq')
  print(f'machine: {cores} cores, {jax.device_count()} x {jax.devices()[0].device_kind}; '
        f'load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min); '
        f'host_memory.retain_freed_memory: {"on" if retained else "off"} (both sides)')
  print(f'params: ours {num_params / 1e6:.2f}M' +
        (f', peer {peer.num_params / 1e6:.2f}M' if peer else ''))
  print('analytic training FLOPs/step: ' + ', '.join(f'{k} {v / 1e9:.1f}G' for k, v in flops.items())
        + f', total {flops_per_step / 1e9:.1f}G')
  print(f'fp32 matmul peak ({_MATMUL_SIZE.value}^3, best before/after): jax {peak / 1e9:.1f} GFLOP/s'
        + (f', torch {torch_peak / 1e9:.1f} GFLOP/s' if peer else ''))
  print(f'ours: compile+first step {compile_s:.1f}s; rounds (s/step): '
        + ' '.join(f'{s:.3f}' for s in ours_s) + f'; loss {float(metrics["loss"]):.3f}')
  if peer:
    print(f'peer: torch {peer.torch_version}, {peer.threads} threads, own process, attention '
          f'{peer.attn_implementation}; rounds (s/step): ' + ' '.join(f'{s:.3f}' for s in peer_s)
          + f'; loss {peer_loss:.3f}')

  rows = [('electra_jax (JAX/XLA)', ours_s)]
  if peer:
    rows.append(('HF transformers (PyTorch)', peer_s))
  # Median: the typical round. Best: the round least disturbed by other jobs (on a shared machine
  # contention hits the two unequally: PyTorch's OpenMP threads suffer more from oversubscription).
  print()
  for label, pick in (('median round', statistics.median), ('best round', min)):
    print(f'| {label:<26} | {"tokens/s":>9} | {"steps/s":>7} | {"vs peer":>7} | {"MFU":>6} |')
    print(f'|{"-" * 28}|{"-" * 11}|{"-" * 9}|{"-" * 9}|{"-" * 8}|')
    for name, times in rows:
      seconds = pick(times)
      ratio = f'{pick(rows[1][1]) / seconds:.2f}x' if peer else '-'
      print(f'| {name:<26} | {tokens / seconds:>9,.0f} | {1 / seconds:>7.3f} | {ratio:>7} | '
            f'{flops_per_step / seconds / peak:>6.1%} |')
    print()
  print(f'({_ROUNDS.value} alternating rounds of {_STEPS.value} steps; MFU = analytic FLOPs / time / '
        f'the jax matmul peak {peak / 1e9:.1f} GFLOP/s)')

if __name__ == '__main__':
  app.run(main)
