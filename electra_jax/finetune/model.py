"""The fine-tuning model: the pre-trained discriminator body plus a small task head, and the losses.

Parameter tree: `embeddings`, `discriminator` (the names of model.ElectraPretrainer, so pre-trained
weights drop in by key; the pre-training heads are not used) and one head:
  classifier/   [CLS] -> dropout -> dense(num_labels); num_labels=1 for regression (no pooler)
  tagger/       every token -> dropout -> dense(num_labels)
  qa_outputs/   every token -> dense(2): start and end logits; answer_class/: [CLS] -> dropout ->
                dense(1), the answerability logit (SQuAD 2.0)
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from electra_jax import model as model_lib

HEADS = ('classification', 'regression', 'tagging', 'qa')
BODY_KEYS = ('embeddings', 'discriminator')


class FinetuneModel(nn.Module):
  model_config: ml_collections.ConfigDict
  head: str
  num_outputs: int = 1

  @nn.compact
  def __call__(self, input_ids, input_mask, segment_ids, deterministic: bool = True):
    c = self.model_config
    embedded = model_lib.Embeddings(c, name='embeddings')(input_ids, segment_ids, deterministic)
    hidden = model_lib.Transformer(c, model_lib.discriminator_size(c), name='discriminator')(
        embedded, input_mask, deterministic)
    dense = lambda n, name: nn.Dense(n, kernel_init=nn.initializers.normal(c.initializer_range),
                                     name=name)
    drop = lambda x: nn.Dropout(c.dropout_rate)(x, deterministic=deterministic)
    hidden = hidden.astype(jnp.float32)  # heads and losses in float32
    if self.head in ('classification', 'regression'):
      logits = dense(self.num_outputs, 'classifier')(drop(hidden[:, 0]))
      return {'logits': logits[:, 0] if self.head == 'regression' else logits}
    if self.head == 'tagging':
      return {'logits': dense(self.num_outputs, 'tagger')(drop(hidden))}
    if self.head == 'qa':
      start_end = dense(2, 'qa_outputs')(hidden)
      answerable = dense(1, 'answer_class')(drop(hidden[:, 0]))[:, 0]
      return {'start_logits': start_end[..., 0], 'end_logits': start_end[..., 1],
              'answerable_logit': answerable}
    raise ValueError(f'head must be one of {HEADS}, got {self.head!r}')


def init_params(model: FinetuneModel, rng, seq_len: int = 8):
  ids = jnp.zeros((1, seq_len), jnp.int32)
  return model.init(rng, ids, jnp.ones_like(ids), ids)['params']


def _masked_mean(values, weights):
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-6)


def loss_fn(head: str, outputs, batch):
  """Mean loss over the batch's real examples (`weight` 0 marks padding)."""
  weight = batch['weight']
  if head == 'classification':
    losses = optax.softmax_cross_entropy_with_integer_labels(outputs['logits'], batch['label'])
    return _masked_mean(losses, weight)
  if head == 'regression':
    return _masked_mean(jnp.square(outputs['logits'] - batch['label']), weight)
  if head == 'tagging':
    losses = optax.softmax_cross_entropy_with_integer_labels(outputs['logits'], batch['labels'])
    return _masked_mean(losses, batch['label_weights'] * weight[:, None])
  if head == 'qa':
    # Positions outside the context can't be an answer; a window without the answer (or a SQuAD 2.0
    # unanswerable question) points start and end at [CLS] (position 0), as in BERT/ELECTRA.
    big_negative = -1e4
    start = jnp.where(batch['context_mask'] > 0, outputs['start_logits'], big_negative)
    end = jnp.where(batch['context_mask'] > 0, outputs['end_logits'], big_negative)
    start = start.at[:, 0].set(outputs['start_logits'][:, 0])
    end = end.at[:, 0].set(outputs['end_logits'][:, 0])
    span = (optax.softmax_cross_entropy_with_integer_labels(start, batch['start_position'])
            + optax.softmax_cross_entropy_with_integer_labels(end, batch['end_position'])) / 2
    answerable = optax.sigmoid_binary_cross_entropy(outputs['answerable_logit'],
                                                    batch['answerable'].astype(jnp.float32))
    return _masked_mean(span + answerable, weight)
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
