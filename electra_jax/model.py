"""The ELECTRA transformer (Flax linen): embeddings, BERT encoder, generator and discriminator heads.

Parameter tree of `ElectraPretrainer` (names follow the HF layout so conversion is a rename):
  embeddings/            word/position/token_type embeddings + LayerNorm, SHARED by both models
  generator_embeddings/  with model.embedding_sharing 'separate' (the generator's own tables,
                         as wide as its hidden size) or 'gdes' (see ElectraPretrainer)
  generator/             [embeddings_project], layer_0 .. layer_{L-1}  (absent when the generator is
                         tied to the discriminator: model.untied_generator=False)
  discriminator/         [embeddings_project], layer_0 .. layer_{L-1}
  generator_predictions/ dense (-> embedding size), LayerNorm, output_bias; output layer tied to
                         the word embeddings
  discriminator_predictions/ dense, dense_prediction

A fine-tuning model uses the same `embeddings` + `discriminator` names, so a pre-trained
discriminator drops in by dictionary lookup.
"""
import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections


@dataclasses.dataclass(frozen=True)
class TransformerSize:
  hidden_size: int
  num_heads: int
  intermediate_size: int
  num_layers: int


def discriminator_size(model_config) -> TransformerSize:
  return TransformerSize(model_config.hidden_size, model_config.num_heads,
                         model_config.intermediate_size, model_config.num_layers)


def generator_size(model_config) -> TransformerSize:
  """Reference: hidden = round(H x fraction), heads = max(1, hidden // 64), FFN = 4 x hidden."""
  if model_config.generator_fraction == 1.0:
    return discriminator_size(model_config)
  hidden = int(round(model_config.hidden_size * model_config.generator_fraction))
  return TransformerSize(hidden, max(1, hidden // 64), 4 * hidden, model_config.num_layers)


def tf1_truncated_normal(stddev: float):
  """TF1's truncated_normal_initializer(stddev): N(0, stddev^2) redrawn outside +-2 stddev, NOT
  rescaled, so the real standard deviation is 0.88 x stddev (0.0176 for 0.02). jax's own
  truncated_normal initializer rescales to the nominal std; this one does not."""
  def init(key, shape, dtype=jnp.float32):
    return stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32).astype(dtype)
  return init


def _init(model_config):
  """Embedding tables and the transformer's kernels: the original's create_initializer
  (truncated normal, `initializer_range`); `model.initializer='normal'` gives plain
  normal(initializer_range) instead."""
  if model_config.get('initializer', 'original') == 'normal':
    return nn.initializers.normal(stddev=model_config.initializer_range)
  return tf1_truncated_normal(model_config.initializer_range)


def dense_default_init(model_config):
  """Layers the original builds with `tf.layers.dense` and no initializer, so with its default
  glorot (Xavier) uniform, U(+-sqrt(6 / (fan_in + fan_out))): `embeddings_project`, the
  discriminator head's output layer and the fine-tuning heads. Much larger than 0.02 (0.21 for a
  [128, 1] kernel): the discriminator head's output layer sets how strongly the detection loss
  reaches the encoder at the start. `model.initializer='normal'`: normal(initializer_range)."""
  if model_config.get('initializer', 'original') == 'normal':
    return nn.initializers.normal(stddev=model_config.initializer_range)
  return nn.initializers.glorot_uniform()


def _dtype(model_config):
  return jnp.dtype(model_config.dtype)


KERNELS = ('auto', 'stock', 'cpu')


def resolve_kernels(model_config, platform: str = '') -> str:
  """model.kernels as 'cpu' or 'stock'; 'auto' (or no key: older configs) is 'cpu' when the step
  runs on CPU (`platform`, else jax.default_backend()) and 'stock' on GPU/TPU.

  'cpu': the hand-written pieces below that pay off on XLA's CPU backend (hashed dropout masks,
  custom-VJP LayerNorm, GELU and cross-entropy, the one-head attention without its head axis).
  'stock': flax/jax/optax's own ops, which the GPU and TPU compilers know best. Same parameters,
  same results with dropout off (tests/test_kernels.py); the dropout masks differ.
  Called when the model is built (make_pretrainer: the mesh's platform, so a CPU host compiling
  for a TPU slice gets the TPU's kernels), and by each module for models built directly.
  """
  kernels = model_config.get('kernels', 'auto')
  if kernels not in KERNELS:
    raise ValueError(f'model.kernels must be one of {KERNELS}, got {kernels!r}')
  if kernels != 'auto':
    return kernels
  return 'cpu' if (platform or jax.default_backend()) == 'cpu' else 'stock'


# 'splash_interpret' is what 'splash' resolves to off TPU: Pallas's interpreter runs the kernel.
ATTENTION = ('auto', 'xla', 'splash', 'splash_interpret')


def resolve_attention(model_config, platform: str = '') -> str:
  """model.attention as 'xla', 'splash' or 'splash_interpret' (see defaults.py) for the step's
  `platform` ('' = jax.default_backend()): 'auto' (or no key) is 'splash' on TPU, else 'xla'.
  'splash' asked for where the step does not run on a TPU is 'splash_interpret': the same kernel
  evaluated as plain JAX ops by Pallas's interpreter (slow; for tests)."""
  attention = model_config.get('attention', 'auto')
  if attention not in ATTENTION:
    raise ValueError(f'model.attention must be one of {ATTENTION[:3]}, got {attention!r}')
  on_tpu = (platform or jax.default_backend()) == 'tpu'
  if attention == 'auto':
    return 'splash' if on_tpu else 'xla'
  return 'splash_interpret' if attention == 'splash' and not on_tpu else attention


def with_kernels(model_config, platform: str = ''):
  """A copy of `model_config` with model.kernels and model.attention resolved for `platform`
  (resolve_kernels, resolve_attention)."""
  c = ml_collections.ConfigDict(model_config.to_dict())
  c.kernels = resolve_kernels(model_config, platform)
  c.attention = resolve_attention(model_config, platform)
  return c


def splash_block(seq_len: int) -> int:
  """The splash kernel's tile along both sequence axes (a multiple of 128 dividing seq_len; 0:
  none, the kernel does not apply)."""
  return next((b for b in (512, 256, 128) if seq_len % b == 0), 0)


def attention_path(model_config, seq_len: int, dropout: bool) -> str:
  """How a layer computes self-attention: 'explicit' (einsums and a softmax, which attention
  dropout needs), 'splash' / 'splash_interpret' (model.attention, where the sequence length is a
  multiple of 128), else 'xla' (jax.nn.dot_product_attention)."""
  if dropout:
    return 'explicit'
  attention = model_config.get('attention', 'auto')  # as with_kernels resolved it for the step
  attention = resolve_attention(model_config) if attention == 'auto' else attention  # (or here)
  return attention if attention.startswith('splash') and splash_block(seq_len) else 'xla'


def splash_attention(q, k, v, attention_mask, interpret: bool = False):
  """softmax(q k^T / sqrt(d) + mask) v by the TPU splash-attention kernel; q, k, v [B, T, H, D],
  attention_mask [B, 1, 1, T] (True: a real token). T must be a multiple of 128.

  The mask becomes the kernel's segment ids (1 real, 0 padding): a real token attends to the real
  ones, exactly as the additive mask; a padding position attends to padding instead, and nothing
  reads padding positions (they are masked as keys and weighted 0 in every loss). The kernel is
  a Pallas call, which XLA does not partition: under a context mesh (sharding.traced_in_mesh) it
  runs per shard in a shard_map, batch over the 'data' and 'fsdp' axes, heads over 'tensor'.
  """
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks  # pylint: disable=g-import-not-at-top
  batch, seq_len, _, head_dim = q.shape
  block = splash_block(seq_len)
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  heads_first = lambda t: t.transpose(0, 2, 1, 3)  # the kernel's [H, T, D] per example
  q = q * jnp.asarray(1.0 / head_dim**0.5, q.dtype)  # the kernel does not scale

  def local(q, k, v, segment_ids):
    heads = q.shape[1]
    kernel = splash.make_splash_mha(masks.MultiHeadMask([masks.FullMask((seq_len, seq_len))] * heads),
                                    block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                    interpret=interpret)
    one = lambda q, k, v, s: kernel(q, k, v, segment_ids=splash.SegmentIds(s, s))
    return jax.vmap(one)(q, k, v, segment_ids)

  args = (heads_first(q), heads_first(k), heads_first(v),
          attention_mask.reshape(batch, seq_len).astype(jnp.int32))
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    ctx = local(*args)
  else:
    sizes_of = dict(mesh.shape)
    batch_axes = tuple(a for a in ('data', 'fsdp') if sizes_of.get(a, 1) > 1) or None
    heads_axis = 'tensor' if sizes_of.get('tensor', 1) > 1 and args[0].shape[1] % sizes_of['tensor'] == 0 else None
    spec = jax.sharding.PartitionSpec(batch_axes, heads_axis, None, None)
    ctx = jax.shard_map(local, in_specs=(spec, spec, spec, jax.sharding.PartitionSpec(batch_axes, None)),
                        out_specs=spec, check_vma=False)(*args)
  return heads_first(ctx)


def _cpu(model_config) -> bool:
  return resolve_kernels(model_config) == 'cpu'


def make_layer_norm(model_config, name=None):
  """LayerNorm over the last axis, parameters `scale` and `bias` (float32) either way: this repo's
  custom-VJP LayerNorm ('cpu' kernels) or nn.LayerNorm ('stock')."""
  c = model_config
  if _cpu(c):
    return LayerNorm(epsilon=c.layer_norm_eps, dtype=_dtype(c), name=name)
  return nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=_dtype(c), param_dtype=jnp.float32,
                      name=name)


def activation(model_config):
  """Exact (erf) GELU: `gelu` below ('cpu' kernels) or jax.nn.gelu(approximate=False)."""
  return gelu if _cpu(model_config) else functools.partial(jax.nn.gelu, approximate=False)


class Embeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout. Output width: embedding_size.

  `gdes_delta`: the word and position tables hold only E_delta (initialized to zero) of
  gradient-disentangled embedding sharing; called with `base` (the generator's Embeddings), the
  tables used are stop_gradient(base's) + E_delta.
  """
  config: ml_collections.ConfigDict
  gdes_delta: bool = False

  def setup(self):
    c = self.config
    table_init = nn.initializers.zeros_init() if self.gdes_delta else _init(c)
    self.word_embeddings = nn.Embed(c.vocab_size, c.embedding_size, embedding_init=table_init,
                                    dtype=_dtype(c), name='word_embeddings')
    self.position_embeddings = nn.Embed(c.max_position_embeddings, c.embedding_size,
                                        embedding_init=table_init, dtype=_dtype(c))
    self.token_type_embeddings = nn.Embed(c.type_vocab_size, c.embedding_size,
                                          embedding_init=_init(c), dtype=_dtype(c))
    self.LayerNorm = make_layer_norm(c)

  def __call__(self, input_ids, segment_ids, deterministic: bool, base=None):
    seq_len = input_ids.shape[-1]
    if seq_len > self.config.max_position_embeddings:
      raise ValueError(f'sequence length {seq_len} > max_position_embeddings '
                       f'{self.config.max_position_embeddings}')
    if base is None:
      x = (self.word_embeddings(input_ids)
           + self.position_embeddings(jnp.arange(seq_len)[None, :]))
    else:  # GDES: the generator's tables without their gradient, plus this module's E_delta
      word, position = (jax.lax.stop_gradient(b.embedding) + own.embedding for b, own in (
          (base.word_embeddings, self.word_embeddings),
          (base.position_embeddings, self.position_embeddings)))
      dtype = _dtype(self.config)
      x = (jnp.take(word, input_ids, axis=0).astype(dtype)
           + position[None, :seq_len].astype(dtype))
    x = x + self.token_type_embeddings(segment_ids)
    return dropout(self, self.LayerNorm(x), self.config.dropout_rate, deterministic,
                   stock=not _cpu(self.config))

  def attend(self, h):
    """Logits over the vocabulary with the word-embedding table as output layer (tied)."""
    return self.word_embeddings.attend(h)


def dropout(module: nn.Module, x, rate: float, deterministic: bool, stock: bool = False):
  """Inverted dropout like nn.Dropout, with a cheaper random mask (same rng stream: 'dropout').
  `stock` (model.kernels 'stock'): nn.Dropout's own mask, jax.random.bernoulli.

  nn.Dropout draws a 32-bit uniform per element, and jax's (partitionable) threefry spends one
  whole 2x32 hash per element. Here one Threefry-2x32 hash of the counter i gives 4 elements: its
  two 32-bit output words, each split into two 16-bit draws; an element is kept when its draw
  >= round(rate * 2^16), so the drop probability is rate to within 2^-17 (0.1 -> 0.100006).
  The hash is `threefry2x32` below (unrolled, so XLA fuses it with the mask into one pass; jax's
  own threefry lowers to a loop on CPU). A quarter of the hashes in one fused pass: the step's masks
  cost a fraction of nn.Dropout's on CPU (measured in benchmarks/README.md).
  """
  if deterministic or rate == 0.0:
    return x
  if rate >= 1.0:
    return jnp.zeros_like(x)
  key = module.make_rng('dropout')
  if stock:  # nn.Dropout's mask
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  key = key.reshape(-1)[:2].astype(jnp.uint32)  # a threefry key; other impls' first two words
  counters = jnp.arange(-(-x.size // 4), dtype=jnp.uint32)  # four 16-bit draws per hash
  words = jnp.stack(threefry2x32(key, counters, jnp.zeros_like(counters)), axis=-1)
  draws = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[:x.size].reshape(x.shape)
  keep = draws >= jnp.uint16(min(round(rate * 65536), 65535))
  return jnp.where(keep, x * jnp.asarray(1.0 / (1.0 - rate), x.dtype), jnp.zeros((), x.dtype))


def threefry2x32(key, x0, x1):
  """Threefry-2x32 (20 rounds; Salmon et al. 2011), the hash behind jax.random, on uint32 arrays:
  (key[0], key[1]) and the counter pair (x0, x1) -> two output words. Bit-identical to
  jax.extend.random.threefry_2x32 (tested); written as plain ops so XLA can fuse it."""
  rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
  k0, k1 = key[0], key[1]
  keys = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
  x0, x1 = x0 + k0, x1 + k1
  for i in range(5):
    for r in rotations[i % 2]:
      x0 = x0 + x1
      x1 = (x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r))
      x1 = x1 ^ x0
    x0 = x0 + keys[(i + 1) % 3]
    x1 = x1 + keys[(i + 2) % 3] + jnp.uint32(i + 1)
  return x0, x1


@jax.custom_vjp
def gelu(x):
  """Exact GELU, x * Phi(x), as 0.5 x (1 + erf(x / sqrt(2))): the formula of ELECTRA/BERT's TF code
  (tf.math.erf) and of HF's 'gelu'. jax.nn.gelu(approximate=False) is the same function computed
  through erfc, which XLA's CPU backend expands into branches and an exp, so it is slower there
  (measured in benchmarks/README.md).
  Its gradient (below) recomputes erf from x instead of keeping erf's output from the forward pass:
  one [tokens, FFN width] array less to write and read back per layer."""
  return x * _normal_cdf(x)


def _normal_cdf(x):
  return 0.5 * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


def _gelu_fwd(x):
  return gelu(x), x


def _gelu_bwd(x, dy):  # d/dx x Phi(x) = Phi(x) + x phi(x)
  pdf = jnp.exp(-0.5 * x * x) * jnp.asarray(0.3989422804014327, x.dtype)
  return (dy * (_normal_cdf(x) + x * pdf),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


class LayerNorm(nn.Module):
  """nn.LayerNorm (same parameters, same float32 statistics) with a hand-written backward pass:
  dx = rstd (g - mean(g) - x_hat mean(g x_hat)) with g = dy scale, from the x_hat and rstd the forward
  pass keeps, instead of autodiff through the mean and variance: fewer passes over the activations,
  a faster step on CPU together with `gelu`'s gradient and the additive attention mask (measured in
  benchmarks/README.md)."""
  epsilon: float = 1e-12
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (x.shape[-1],), jnp.float32)
    return layer_norm(x.astype(jnp.float32), scale, bias, self.epsilon).astype(self.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x, scale, bias, epsilon):
  return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.maximum(jnp.mean(jnp.square(x), axis=-1, keepdims=True) - jnp.square(mean), 0.0)
  rstd = jax.lax.rsqrt(var + epsilon)
  xhat = (x - mean) * rstd
  return xhat * scale + bias, (xhat, rstd, scale)


def _layer_norm_bwd(epsilon, residuals, dy):
  del epsilon
  xhat, rstd, scale = residuals
  g = dy * scale
  dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True)
               - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))
  reduce_axes = tuple(range(dy.ndim - 1))
  return dx, jnp.sum(dy * xhat, axis=reduce_axes), jnp.sum(dy, axis=reduce_axes)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class _DenseParams(nn.Module):
  """The kernel and bias of an nn.Dense (same names, shapes and init), without applying them: lets a
  layer concatenate several Dense layers' weights into one matmul and keep their parameter names."""
  features: int
  kernel_init: Any

  @nn.compact
  def __call__(self, in_features: int):
    kernel = self.param('kernel', self.kernel_init, (in_features, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    return kernel, bias


class TransformerLayer(nn.Module):
  """One post-LayerNorm BERT layer."""
  config: ml_collections.ConfigDict
  size: TransformerSize

  @nn.compact
  def __call__(self, x, attention_mask, deterministic: bool):
    """x: [batch x seq_len, hidden] (see Transformer); attention_mask: [batch, 1, 1, seq_len]."""
    c, s = self.config, self.size
    dtype = _dtype(c)
    dense = lambda n, name: nn.Dense(n, kernel_init=_init(c), dtype=dtype, name=name)
    batch, seq_len = attention_mask.shape[0], attention_mask.shape[-1]
    head_dim = s.hidden_size // s.num_heads
    cpu = _cpu(c)
    if cpu:
      # Query, key and value in one [hidden, 3 x hidden] matmul: one pass over x instead of three
      # (and one weight-gradient matmul in the backward pass). The parameters stay three Dense
      # layers. 'stock' keeps three: no copy of the weights per step, and no resharding of the
      # concatenation when they are split over a 'tensor' mesh axis.
      qkv = [_DenseParams(s.hidden_size, _init(c), name=n)(x.shape[-1])
             for n in ('query', 'key', 'value')]
      kernel = jnp.concatenate([k for k, _ in qkv], axis=1).astype(dtype)
      bias = jnp.concatenate([b for _, b in qkv]).astype(dtype)
      q, k, v = jnp.split(jnp.dot(x.astype(dtype), kernel) + bias, 3, axis=-1)
    else:
      q, k, v = (dense(s.hidden_size, n)(x) for n in ('query', 'key', 'value'))
    split = lambda t: t.reshape(batch, seq_len, s.num_heads, head_dim)
    q, k, v = split(q), split(k), split(v)
    drop = functools.partial(dropout, self, stock=not cpu)
    path = attention_path(c, seq_len, dropout=not deterministic and c.attention_dropout_rate > 0)
    if path.startswith('splash'):
      ctx = splash_attention(q, k, v, attention_mask, interpret=path == 'splash_interpret')
    elif path == 'xla':
      # jax's attention op (its XLA implementation: jax 0.10's implementation=None never picks
      # cuDNN, which wants bfloat16 and would not take the boolean mask as is).
      ctx = jax.nn.dot_product_attention(q, k, v, mask=attention_mask)
    else:
      # The reference drops attention probabilities (rate 0.1), which the fused op can't do.
      # Set model.attention_dropout_rate=0 to train with it instead.
      # The 1/sqrt(d) scale goes on q ([B, T, H]), not on the [B, heads, T, T] logits.
      q = q * jnp.asarray(1.0 / head_dim**0.5, dtype)
      mask, scores, mix = attention_mask, 'bqhd,bkhd->bhqk', 'bhqk,bkhd->bqhd'
      if cpu and s.num_heads == 1:  # (ELECTRA-Small's generator) without the extent-1 head
        # axis, which XLA:CPU's YNNPACK fusions treat as a broadcast: the softmax gradient ran
        # much slower per element with it (measured in benchmarks/README.md).
        q, k, v, mask = q[:, :, 0], k[:, :, 0], v[:, :, 0], attention_mask[:, 0]
        scores, mix = 'bqd,bkd->bqk', 'bqk,bkd->bqd'
      logits = jnp.einsum(scores, q, k)
      # The original's additive mask (exp(-10000) is exactly 0 in float32); unlike a select, its
      # gradient is the identity.
      logits = logits + jnp.where(mask, 0.0, -10000.0).astype(logits.dtype)
      probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)
      probs = drop(probs, c.attention_dropout_rate, deterministic=False)
      ctx = jnp.einsum(mix, probs, v)
    ctx = ctx.reshape(batch * seq_len, s.hidden_size)
    attn_out = drop(dense(s.hidden_size, 'attention_output')(ctx), c.dropout_rate, deterministic)
    x = make_layer_norm(c, name='attention_LayerNorm')(x + attn_out)
    h = activation(c)(dense(s.intermediate_size, 'intermediate')(x))
    h = drop(dense(s.hidden_size, 'output')(h), c.dropout_rate, deterministic)
    return make_layer_norm(c, name='output_LayerNorm')(x + h)


class _ScannedLayer(nn.Module):
  """One TransformerLayer as the body of nn.scan: (carry, mask) -> (carry, None)."""
  config: ml_collections.ConfigDict
  size: TransformerSize
  deterministic: bool

  @nn.compact
  def __call__(self, x, attention_mask):
    layer_class = _maybe_remat(TransformerLayer, self.config)
    return layer_class(self.config, self.size, name='layer')(x, attention_mask,
                                                             self.deterministic), None


def _maybe_remat(layer_class, model_config):
  # static_argnums counts self as 0: `deterministic` (arg 3) selects Python branches.
  return nn.remat(layer_class, static_argnums=(3,)) if model_config.get('remat', False) \
      else layer_class


class Transformer(nn.Module):
  """Projection of the (shared) embeddings to this model's width, then the layer stack.

  `scan_layers`: the stack is one nn.scan, its params stacked under `layers/layer` with a leading
  layer axis (see `stack_layers`); otherwise `layer_0` .. `layer_{L-1}`.
  `model.remat` recomputes each layer's activations in the backward pass (same params, same result).
  """
  config: ml_collections.ConfigDict
  size: TransformerSize
  scan_layers: bool = False

  @nn.compact
  def __call__(self, embedded, input_mask, deterministic: bool):
    """embedded [B, T, embedding_size], input_mask [B, T] -> hidden states [B, T, hidden_size]."""
    c = self.config
    # The layers see [B x T, width]: a weight gradient is then x^T dy over one contracting dim,
    # which XLA's CPU backend computes in place; contracting [B, T] it first copied x or dy
    # transposed before each such matmul (the step's time before and after: benchmarks/README.md).
    batch, seq_len = input_mask.shape
    x = embedded.reshape(batch * seq_len, embedded.shape[-1])
    if x.shape[-1] != self.size.hidden_size:  # the original's embeddings_project
      x = nn.Dense(self.size.hidden_size, kernel_init=dense_default_init(c), dtype=_dtype(c),
                   name='embeddings_project')(x)
    attention_mask = input_mask[:, None, None, :].astype(bool)  # [B, 1(heads), 1(query), keys]
    if self.scan_layers:
      stack = nn.scan(_ScannedLayer, variable_axes={'params': 0},
                      split_rngs={'params': True, 'dropout': True}, in_axes=nn.broadcast,
                      length=self.size.num_layers)
      x, _ = stack(c, self.size, deterministic, name='layers')(x, attention_mask)
    else:
      layer_class = _maybe_remat(TransformerLayer, c)
      for i in range(self.size.num_layers):
        x = layer_class(c, self.size, name=f'layer_{i}')(x, attention_mask, deterministic)
    return x.reshape(batch, seq_len, x.shape[-1])


def _is_layer_stack(tree):
  return isinstance(tree, dict) and 'layer_0' in tree


def stack_layers(params):
  """Per-layer params (layer_0 .. layer_{L-1}) -> the scan layout (layers/layer, leading axis L).

  Checkpoints, exports and conversion keep the per-layer layout; a scan_layers model gets this
  stacked copy inside the step (the gradient flows back to the per-layer tree).
  """
  if not isinstance(params, dict):
    return params
  if _is_layer_stack(params):
    count = sum(1 for k in params if k.startswith('layer_'))
    layers = [params[f'layer_{i}'] for i in range(count)]
    rest = {k: v for k, v in params.items() if not k.startswith('layer_')}
    return {**rest, 'layers': {'layer': jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}}
  return {k: stack_layers(v) for k, v in params.items()}


class GeneratorHead(nn.Module):
  """dense(width of E) -> GELU -> LayerNorm; logits = h . E^T + output_bias (tied to E)."""
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, hidden, embeddings: Embeddings):
    c = self.config
    leading = hidden.shape[:-1]
    hidden = hidden.reshape(-1, hidden.shape[-1])  # 2-D, as in Transformer
    h = nn.Dense(embeddings.config.embedding_size, kernel_init=_init(c), dtype=_dtype(c),
                 name='dense')(hidden)
    h = make_layer_norm(c, name='LayerNorm')(activation(c)(h))
    bias = self.param('output_bias', nn.initializers.zeros, (c.vocab_size,))
    # Logits in float32: they feed a softmax over the whole vocabulary and the sampler.
    logits = embeddings.attend(h).astype(jnp.float32) + bias
    return logits.reshape(*leading, c.vocab_size)


class DiscriminatorHead(nn.Module):
  """dense(hidden) -> GELU -> dense(1): one 'replaced' logit per token."""
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, hidden):
    c = self.config
    leading = hidden.shape[:-1]
    hidden = hidden.reshape(-1, hidden.shape[-1])  # 2-D, as in Transformer
    h = activation(c)(nn.Dense(hidden.shape[-1], kernel_init=_init(c), dtype=_dtype(c),
                               name='dense')(hidden))
    out = nn.Dense(1, kernel_init=dense_default_init(c), dtype=_dtype(c),
                   name='dense_prediction')(h)
    return out.reshape(leading).astype(jnp.float32)


def gather_positions(sequence, positions):
  """sequence [B, T, D], positions [B, P] -> [B, P, D]."""
  return jnp.take_along_axis(sequence, positions[:, :, None], axis=1)


class ElectraPretrainer(nn.Module):
  """Generator + discriminator with shared embeddings. Call the two halves separately:
  `model.apply(..., method=model.generator_logits)`, then `method=model.discriminator_logits` on
  the corrupted ids; `networks(model)` gives both as functions of the parameters.

  `embedding_sharing` (model.embedding_sharing): 'shared' (one `embeddings` module, ELECTRA),
  'separate' (the generator's own `generator_embeddings`, as wide as the generator: the original's
  untied_generator_embeddings), or 'gdes' (DeBERTaV3: `generator_embeddings` of embedding_size
  trained by the MLM loss alone; the discriminator's word and position tables are
  stop_gradient(generator's) + its `embeddings` E_delta, its token-type table and LayerNorm its own).
  """
  model_config: ml_collections.ConfigDict
  embedding_sharing: str = 'shared'
  untied_generator: bool = True
  scan_layers: bool = False  # the layer stacks as nn.scan (model.scan_layers); see stack_layers

  def setup(self):
    c = self.model_config
    if self.embedding_sharing not in EMBEDDING_SHARING:
      raise ValueError(f'embedding_sharing must be one of {EMBEDDING_SHARING}, got '
                       f'{self.embedding_sharing!r}')
    gdes = self.embedding_sharing == 'gdes'
    self.embeddings = Embeddings(c, gdes_delta=gdes)
    if gdes:
      self.generator_embeddings = Embeddings(c)
    elif self.embedding_sharing == 'separate':
      self.generator_embeddings = Embeddings(generator_embeddings_config(c))
    self.discriminator = Transformer(c, discriminator_size(c), scan_layers=self.scan_layers)
    if self.untied_generator:
      self.generator = Transformer(c, generator_size(c), scan_layers=self.scan_layers)
    elif generator_size(c) != discriminator_size(c):
      raise ValueError('untied_generator=False (generator shares all discriminator weights) needs '
                       'model.generator_fraction=1.0')
    self.generator_predictions = GeneratorHead(c)
    self.discriminator_predictions = DiscriminatorHead(c)

  def _generator_parts(self):
    emb = self.embeddings if self.embedding_sharing == 'shared' else self.generator_embeddings
    body = self.generator if self.untied_generator else self.discriminator
    return emb, body

  def generator_logits(self, masked_ids, input_mask, segment_ids, masked_positions,
                       deterministic: bool = True):
    """Masked-LM logits [B, P, V] (float32), computed only at the P masked positions."""
    emb, body = self._generator_parts()
    hidden = body(emb(masked_ids, segment_ids, deterministic), input_mask, deterministic)
    return self.generator_predictions(gather_positions(hidden, masked_positions), emb)

  def discriminator_logits(self, input_ids, input_mask, segment_ids, deterministic: bool = True):
    """Replaced-token logits [B, T] (float32)."""
    base = self.generator_embeddings if self.embedding_sharing == 'gdes' else None
    hidden = self.discriminator(self.embeddings(input_ids, segment_ids, deterministic, base),
                                input_mask, deterministic)
    return self.discriminator_predictions(hidden)

  def __call__(self, input_ids, input_mask, segment_ids, masked_positions,
               deterministic: bool = True):
    """Both halves on the same ids; used to create every parameter at init."""
    return (self.generator_logits(input_ids, input_mask, segment_ids, masked_positions,
                                  deterministic),
            self.discriminator_logits(input_ids, input_mask, segment_ids, deterministic))


class Networks(NamedTuple):
  """The pre-training model as objective.electra_loss calls it: its two halves as functions of the
  parameters (in the layout `apply_params` gives), and what else the objective needs of the model.

  generator(params, masked_ids, input_mask, segment_ids, masked_positions, dropout_rng, *,
            deterministic) -> masked-LM logits [B, P, V] (float32)
  discriminator(params, input_ids, input_mask, segment_ids, dropout_rng, *, deterministic)
      -> replaced-token logits [B, T] (float32)
  """
  generator: Callable
  discriminator: Callable
  vocab_size: int  # V, the width of the uniform generator's logits (objective.uniform_generator)
  stock_kernels: bool  # model.kernels resolved to 'stock': optax's cross-entropy for the MLM loss


def networks(model: ElectraPretrainer) -> Networks:
  """`model`'s generator_logits and discriminator_logits as `Networks`."""
  def generator(params, masked_ids, input_mask, segment_ids, masked_positions, dropout_rng, *,
                deterministic):
    return model.apply({'params': params}, masked_ids, input_mask, segment_ids, masked_positions,
                       method=ElectraPretrainer.generator_logits, rngs={'dropout': dropout_rng},
                       deterministic=deterministic)

  def discriminator(params, input_ids, input_mask, segment_ids, dropout_rng, *, deterministic):
    return model.apply({'params': params}, input_ids, input_mask, segment_ids,
                       method=ElectraPretrainer.discriminator_logits,
                       rngs={'dropout': dropout_rng}, deterministic=deterministic)

  return Networks(generator, discriminator, model.model_config.vocab_size,
                  resolve_kernels(model.model_config) == 'stock')


def generator_embeddings_config(model_config):
  """The model config of untied generator embeddings: tables as wide as the generator (the
  original: no embeddings_project), or `model.generator_embedding_size` when that is set."""
  c = ml_collections.ConfigDict(model_config.to_dict())
  c.embedding_size = (model_config.get('generator_embedding_size', 0)
                      or generator_size(model_config).hidden_size)
  return c


EMBEDDING_SHARING = ('shared', 'separate', 'gdes')


def embedding_sharing(model_config) -> str:
  """model.embedding_sharing, with the original's untied_generator_embeddings=True read as
  'separate'."""
  sharing = model_config.get('embedding_sharing', 'shared')
  if model_config.get('untied_generator_embeddings', False):
    if sharing == 'gdes':
      raise ValueError("model.untied_generator_embeddings=True contradicts "
                       "model.embedding_sharing='gdes'")
    return 'separate'
  return sharing


def make_pretrainer(config, platform: str = '') -> ElectraPretrainer:
  """The pre-training model of `config`, its model.kernels resolved for `platform` (the devices
  the step runs on; '' = jax.default_backend())."""
  return ElectraPretrainer(with_kernels(config.model, platform),
                           embedding_sharing=embedding_sharing(config.model),
                           untied_generator=config.model.untied_generator,
                           scan_layers=bool(config.model.get('scan_layers', False)))


def init_params(model: ElectraPretrainer, rng, seq_len: int = 8, num_predictions: int = 2) -> Any:
  """Float32 parameters in the per-layer layout, the same values with or without scan_layers.

  Shapes don't depend on the batch or sequence length used here.
  """
  ids = jnp.zeros((1, seq_len), jnp.int32)
  positions = jnp.zeros((1, num_predictions), jnp.int32)
  # The loop model names each layer's init rng by its path; a scan would split them differently.
  loop_model = model.clone(scan_layers=False)
  return loop_model.init(rng, ids, jnp.ones_like(ids), ids, positions)['params']


def apply_params(model: ElectraPretrainer, params):
  """The per-layer params as `model.apply` wants them (stacked for scan_layers)."""
  return stack_layers(params) if model.scan_layers else params
