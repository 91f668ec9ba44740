"""The fine-tuning model: the pre-trained discriminator body plus a small task head, and the losses.

Parameter tree: `embeddings`, `discriminator` (the names of model.ElectraPretrainer, so pre-trained
weights drop in by key; the pre-training heads are not used) and one head:
  classifier/   [CLS] -> dropout -> dense(num_labels); num_labels=1 for regression (no pooler)
  tagger/       every token -> dense(num_labels) (tagging.dropout: dropout first)
  qa_start/     every token -> dense(1): start logits (positions outside the context and [CLS]
                masked, as the original's answer_mask)
  qa_end/       (qa_joint=False) every token -> dense(1): end logits, independent of the start
  qa_hidden/, qa_logits/ (qa_joint=True, the original's "joint_prediction", XLNet-style): end logit
                of token t given start s = dense(1)(GELU(dense(512)([h_s; h_t]))); training
                conditions on the gold start, inference keeps a beam of the `qa_beam` best starts
                and, for each, the `qa_beam` best ends (log-probabilities)
  answer_class/ answerability logit from [CLS] (with qa_answerable_uses_start: [h_CLS; the
                start-probability-weighted hidden state] -> dense(512) -> GELU first, the original)
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from electra_jax import model as model_lib

HEADS = ('classification', 'regression', 'tagging', 'qa')
BODY_KEYS = ('embeddings', 'discriminator')


class JointEndLogits(nn.Module):
  """dense(1)(GELU(dense(512)([start_features; end_features]))) with broadcasting: the 512-wide
  layer is applied to each half separately, so [B, K, 1, H] x [B, 1, T, H] never materializes
  the concatenation."""
  model_config: ml_collections.ConfigDict
  width: int = 512

  @nn.compact
  def __call__(self, start_features, end_features):
    hidden = end_features.shape[-1]
    init = model_lib.dense_default_init(self.model_config)  # fan_in 2 x hidden, as one dense
    kernel = self.param('kernel', init, (2 * hidden, self.width))
    bias = self.param('bias', nn.initializers.zeros, (self.width,))
    h = start_features @ kernel[:hidden] + end_features @ kernel[hidden:] + bias
    h = model_lib.activation(self.model_config)(h)
    return nn.Dense(1, kernel_init=init, name='qa_logits')(h)[..., 0]


class FinetuneModel(nn.Module):
  model_config: ml_collections.ConfigDict
  head: str
  num_outputs: int = 1
  qa_joint: bool = True
  qa_beam: int = 20
  qa_answerable_uses_start: bool = True
  tagging_dropout: bool = False

  @nn.compact
  def __call__(self, input_ids, input_mask, segment_ids, deterministic: bool = True,
               start_positions=None):
    """Head outputs (float32). QA: `start_positions` (gold, training) conditions the joint end
    head; without them the joint head returns its beam instead of end logits."""
    c = self.model_config
    embedded = model_lib.Embeddings(c, name='embeddings')(input_ids, segment_ids, deterministic)
    hidden = model_lib.Transformer(c, model_lib.discriminator_size(c), name='discriminator')(
        embedded, input_mask, deterministic)
    # The original builds every task head with tf.layers.dense's default (glorot uniform).
    dense = lambda n, name: nn.Dense(n, kernel_init=model_lib.dense_default_init(c), name=name)
    drop = lambda x: nn.Dropout(c.dropout_rate)(x, deterministic=deterministic)
    hidden = hidden.astype(jnp.float32)  # heads and losses in float32
    if self.head in ('classification', 'regression'):
      logits = dense(self.num_outputs, 'classifier')(drop(hidden[:, 0]))
      return {'logits': logits[:, 0] if self.head == 'regression' else logits}
    if self.head == 'tagging':  # the original's tagging head has no dropout
      hidden = drop(hidden) if self.tagging_dropout else hidden
      return {'logits': dense(self.num_outputs, 'tagger')(hidden)}
    if self.head == 'qa':
      return self._qa(hidden, input_mask, segment_ids, start_positions, dense)
    raise ValueError(f'head must be one of {HEADS}, got {self.head!r}')


  def _qa(self, hidden, input_mask, segment_ids, start_positions, dense):
    # The original's answer_mask: context tokens (segment 1) and [CLS] (the no-answer position).
    answer_mask = (input_mask * segment_ids).astype(jnp.float32).at[:, 0].set(1.0)
    masked = 1000.0 * (answer_mask - 1.0)
    start_logits = dense(1, 'qa_start')(hidden)[..., 0] + masked
    outputs = {'start_logits': start_logits}
    if not self.qa_joint:
      outputs['end_logits'] = dense(1, 'qa_end')(hidden)[..., 0] + masked
    else:
      joint = JointEndLogits(self.model_config, name='qa_hidden')
      if start_positions is not None:  # training: the gold start
        start_features = jnp.take_along_axis(hidden, start_positions[:, None, None], axis=1)
        outputs['end_logits'] = joint(start_features, hidden) + masked
      else:  # inference: beam over starts, then over ends for each start
        beam = min(self.qa_beam, hidden.shape[1])
        start_log_probs, start_index = jax.lax.top_k(jax.nn.log_softmax(start_logits), beam)
        start_features = jnp.take_along_axis(hidden, start_index[..., None], axis=1)  # [B,K,H]
        end_logits = joint(start_features[:, :, None, :], hidden[:, None]) + masked[:, None]
        end_log_probs, end_index = jax.lax.top_k(jax.nn.log_softmax(end_logits), beam)
        outputs.update(start_top_log_probs=start_log_probs, start_top_index=start_index,
                       end_top_log_probs=end_log_probs, end_top_index=end_index)
    summary = hidden[:, 0]
    if self.qa_answerable_uses_start:
      start_probs = jax.nn.softmax(start_logits)
      summary = jnp.concatenate([summary, jnp.einsum('bt,bth->bh', start_probs, hidden)], -1)
      summary = model_lib.activation(self.model_config)(dense(512, 'answer_hidden')(summary))
    outputs['answerable_logit'] = dense(1, 'answer_class')(summary)[:, 0]
    return outputs


def make_model(model_config, head: str, num_outputs: int, config=None) -> FinetuneModel:
  """The model for a task; QA options come from config.qa, tagging's from config.tagging."""
  if head == 'tagging' and config is not None:
    return FinetuneModel(model_config, head, num_outputs, tagging_dropout=config.tagging.dropout)
  if head != 'qa' or config is None:
    return FinetuneModel(model_config, head, num_outputs)
  return FinetuneModel(model_config, head, num_outputs, qa_joint=config.qa.joint_prediction,
                       qa_beam=config.qa.beam_size,
                       qa_answerable_uses_start=config.qa.answerable_uses_start_logits)


def init_params(model: FinetuneModel, rng, seq_len: int = 8):
  ids = jnp.zeros((1, seq_len), jnp.int32)
  return model.init(rng, ids, jnp.ones_like(ids), ids)['params']


def _reduce(values, weights, reduction: str):
  """'sum' (the original: per-example losses summed over the batch, so the global-norm clip at 1.0
  acts on the sum) or 'mean' (over the weighted entries)."""
  total = jnp.sum(values * weights)
  if reduction == 'sum':
    return total
  if reduction == 'mean':
    return total / jnp.maximum(jnp.sum(weights), 1e-6)
  raise ValueError(f"loss_reduction must be 'sum' or 'mean', got {reduction!r}")


def loss_fn(head: str, outputs, batch, answerable_weight: float = 0.5, reduction: str = 'sum'):
  """The batch's loss over its real examples (`weight` 0 marks padding), summed (the original) or
  averaged; tagging sums (or averages) over the labeled tokens, as the original."""
  weight = batch['weight']
  if head == 'classification':
    losses = optax.softmax_cross_entropy_with_integer_labels(outputs['logits'], batch['label'])
    return _reduce(losses, weight, reduction)
  if head == 'regression':
    return _reduce(jnp.square(outputs['logits'] - batch['label']), weight, reduction)
  if head == 'tagging':
    losses = optax.softmax_cross_entropy_with_integer_labels(outputs['logits'], batch['labels'])
    return _reduce(losses, batch['label_weights'] * weight[:, None], reduction)
  if head == 'qa':
    # The logits are already masked to the context and [CLS]; a window without the answer (or an
    # unanswerable question) points start and end at [CLS] (position 0), as in BERT/ELECTRA.
    span = (optax.softmax_cross_entropy_with_integer_labels(outputs['start_logits'],
                                                            batch['start_position'])
            + optax.softmax_cross_entropy_with_integer_labels(outputs['end_logits'],
                                                              batch['end_position'])) / 2
    answerable = optax.sigmoid_binary_cross_entropy(outputs['answerable_logit'],
                                                    batch['answerable'].astype(jnp.float32))
    return _reduce(span + answerable_weight * answerable, weight, reduction)
  raise ValueError(head)


def predictions(head: str, outputs):
  """What the host needs for metrics: class ids, scores or raw QA logits (float32)."""
  if head == 'classification':
    return {'prediction': jnp.argmax(outputs['logits'], -1),
            'probabilities': jax.nn.softmax(outputs['logits'], -1)}
  if head == 'regression':
    return {'prediction': outputs['logits']}
  if head == 'tagging':
    return {'prediction': jnp.argmax(outputs['logits'], -1)}
  return outputs
