"""Default ConfigDict shared by configs/*.py (ELECTRA-Small values, reference Table 6).

Each pre-training file in configs/ starts from `get_default_config()` and overrides what differs, so
every key a user can override (`--config.key=value`) is listed here once, with what it means.
Fine-tuning (configs/finetune.py) has keys of its own and only the ones it reads; its `model` and
`optim` come from the same `model_config` and `optim_config`, less the pre-training-only keys.

Keys that moved keep working where they are read back from old files: `upgrade` puts the keys of
an old workdir's config.json or exported pretrained/config.json under their new names (MOVED_KEYS).
"""
import copy

import ml_collections

# Old name -> new name. The generator's tying changes the parameter tree, not the loss: it moved
# from objective.* to model.*.
MOVED_KEYS = {
    'objective.embedding_sharing': 'model.embedding_sharing',
    'objective.untied_generator_embeddings': 'model.untied_generator_embeddings',
    'objective.untied_generator': 'model.untied_generator',
}


def upgrade(config: dict) -> dict:
  """A config as read from JSON (a workdir's config.json, or pretrained/config.json, whose
  'objective' held the tying switches) with each of MOVED_KEYS under its new name. A copy; a value
  already under the new name wins, and a section left empty is dropped."""
  config = copy.deepcopy(config)
  for old, new in MOVED_KEYS.items():
    (old_section, old_key), (new_section, new_key) = old.split('.'), new.split('.')
    section = config.get(old_section)
    if isinstance(section, dict) and old_key in section:
      config.setdefault(new_section, {}).setdefault(new_key, section.pop(old_key))
      if not section:
        del config[old_section]
  return config


def model_config(pretraining: bool = True) -> ml_collections.ConfigDict:
  """model.* (model.py): the transformer, which is the discriminator that fine-tuning uses, and
  with `pretraining` the generator and what it shares with the discriminator."""
  m = ml_collections.ConfigDict()
  m.vocab_size = 30522
  m.embedding_size = 128
  m.hidden_size = 256
  m.num_layers = 12
  m.num_heads = 4
  m.intermediate_size = 1024
  m.max_position_embeddings = 512
  m.type_vocab_size = 2
  m.dropout_rate = 0.1
  m.attention_dropout_rate = 0.1
  m.layer_norm_eps = 1e-12
  m.initializer_range = 0.02
  # 'original': as the original code, truncated normal(initializer_range) (cut at 2 std, not
  # rescaled) for embeddings and transformer kernels, glorot uniform (tf.layers.dense's default) for
  # embeddings_project, the discriminator head's output layer and fine-tuning heads.
  # 'normal': normal(initializer_range) everywhere (HF transformers' choice).
  m.initializer = 'original'
  m.dtype = 'float32'  # compute dtype: 'float32' or 'bfloat16' (params stay float32)
  # Recompute each layer's activations in the backward pass instead of keeping them (nn.remat):
  # less activation memory for ~1/3 more compute. Same results.
  m.remat = False
  # Which implementation of dropout, LayerNorm, GELU, attention and the MLM cross-entropy:
  # 'cpu': hand-written ones that are faster on XLA's CPU backend (a hashed dropout mask, custom
  # gradients for LayerNorm/GELU/cross-entropy, one-head attention without its head axis);
  # 'stock': flax/jax/optax's own (nn.LayerNorm, jax.nn.gelu, jax.nn.dot_product_attention,
  # bernoulli dropout, optax's cross-entropy), what the GPU and TPU compilers are tuned for;
  # 'auto': 'cpu' when the step runs on CPU, else 'stock'. Same parameters either way, same
  # loss and gradients with dropout off (only the dropout masks differ).
  m.kernels = 'auto'
  # Self-attention without dropout (evaluation, or attention_dropout_rate=0): 'xla' is
  # jax.nn.dot_product_attention; 'splash' the Pallas splash-attention kernel of TPUs (flash
  # attention: blocks of queries and keys in on-chip memory, no [seq, seq] probabilities in HBM)
  # wherever the sequence length is a multiple of 128, else 'xla'; 'auto': 'splash' on TPU, else
  # 'xla'. Same results (tests/test_kernels.py runs the kernel in Pallas's interpreter on CPU).
  m.attention = 'auto'
  if not pretraining:
    return m
  # ---- The generator: same depth, hidden = round(hidden_size * generator_fraction).
  m.generator_fraction = 0.25
  # Embedding tables of the generator and the discriminator: 'shared' (ELECTRA: one set, pulled by
  # both losses), 'separate' (the generator's own, as wide as the generator: the original's
  # untied_generator_embeddings=True, which is read as 'separate'), or 'gdes' (DeBERTaV3's
  # gradient-disentangled sharing: the discriminator's word and position tables are
  # stop_gradient(generator's) + E_delta, E_delta starting at zero and trained by the
  # discriminator loss alone; the export writes the sum, a plain ELECTRA discriminator).
  m.embedding_sharing = 'shared'
  m.untied_generator_embeddings = False
  # Width of the generator's own embedding tables with embedding_sharing='separate':
  # 0 = the generator's hidden size (the original; no projection), else this (with a projection).
  m.generator_embedding_size = 0
  m.untied_generator = True  # False: generator IS the discriminator (needs generator_fraction 1.0)
  # Run the layer stack as one nn.scan (compiles one layer instead of num_layers: faster compiles
  # for deep models). Checkpoints and exports keep the per-layer layout (layer_0 ..): the stacked
  # copy exists only inside the step (model.stack_layers). Same results with dropout off; with
  # dropout the per-layer dropout masks are drawn differently.
  m.scan_layers = False
  return m


def optim_config(pretraining: bool = True) -> ml_collections.ConfigDict:
  """optim.* (optim.py); fine-tuning (not `pretraining`) sets its warmup by warmup_proportion."""
  o = ml_collections.ConfigDict()
  # 'adamw': the original's AdamW; 'lamb': LAMB (optax.lamb: Adam moments with bias correction, the
  # same weight-decay mask, a per-parameter trust ratio) for large batches (configs/base_lamb.py).
  # Both clip the global gradient norm at clip_norm first.
  o.name = 'adamw'
  o.learning_rate = 5e-4
  if pretraining:
    o.warmup_steps = 10_000
  o.schedule = 'electra'  # 'electra': warmup overlapping linear decay; 'warmup_linear': textbook
  o.end_learning_rate = 0.0
  o.weight_decay = 0.01
  o.b1 = 0.9
  o.b2 = 0.999
  o.eps = 1e-6
  o.clip_norm = 1.0
  o.bias_correction = False  # adamw: the original's Adam has none; True gives textbook AdamW
  return o


def get_default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 128  # global batch (all processes together)
  c.max_seq_length = 128
  c.num_train_steps = 1_000_000
  # Device mesh (data, fsdp, tensor); -1 = all remaining devices. The batch is split over data x fsdp.
  c.mesh_shape = (-1, 1, 1)
  # Parameters (and their Adam moments) with at least this many elements are split over the 'fsdp'
  # mesh axis on their largest divisible dim; smaller ones stay replicated (sharding.param_spec).
  c.fsdp_min_size = 4096
  # --mode=compile: the TPU slice to compile the train and eval steps for, as gcloud names it:
  # v4-8 .. v4-4096 and v5p-8 .. (TensorCores, 2 per chip), v5e-1 .. v5e-256 (or v5litepod-N) and
  # v6e-1 .. v6e-256 (chips). Reports per-chip HBM and FLOPs without a TPU (compile_tpu.py).
  c.compile_topology = ''
  # Split each batch into this many microbatches inside the jitted step and sum their gradients
  # (batch_size stays the global batch). The loss is normalized by the whole batch's masked slots
  # and real tokens, as one big batch; only the random draws (masks, samples, dropout) differ.
  c.grad_accum_steps = 1
  # Start a new run from imported weights (convert.py): an electra_jax pretrained/ dir or workdir, a
  # HF ELECTRA dir, or a TF1 checkpoint prefix. Used only when the workdir has no checkpoint yet.
  c.init_checkpoint = ''

  # ---- Data: raw text -> vocab -> TFRecord shards (build_data.py) -> batches (input_pipeline.py).
  c.data = ml_collections.ConfigDict()
  # Raw text: comma-separated files/globs (one sentence per line, blank line between documents),
  # or 'tfds:NAME[:SPLIT]' (a TFDS text dataset), or '' for the embedded offline corpus (Python's docs).
  c.data.corpus = ''
  c.data.tfds_text_key = 'text'  # feature holding the text of a TFDS example
  # Vocabulary: a WordPiece `vocab.txt` (BERT/ELECTRA), a SentencePiece `.model`, or '' to train a
  # SentencePiece model of model.vocab_size pieces on the corpus.
  c.data.vocab = ''
  c.data.do_lower_case = True
  # Where shards go; '' means WORKDIR/data. Used as-is if it already holds complete shards (meta.json).
  c.data.data_dir = ''
  c.data.num_shards = 8  # train shards (the original writes 1000 for its full corpus)
  c.data.num_processes = 2  # builder worker processes
  c.data.eval_fraction = 0.02  # fraction of documents held out for pre-training eval
  c.data.shuffle_buffer = 10_000
  c.data.builder_seed = 12345

  # ---- Model (model.py): the transformer, the generator and how the two are tied.
  c.model = model_config()

  # ---- Objective (objective.py): the loss, switches of the original. (What the model is, the
  # generator's tying included, is under model.)
  c.objective = ml_collections.ConfigDict()
  c.objective.electra_objective = True  # False: plain MLM (BERT without NSP, dynamic masking)
  c.objective.mask_prob = 0.15
  c.objective.max_predictions = 0  # 0: int((mask_prob + 0.005) * max_seq_length)
  c.objective.gen_weight = 1.0
  c.objective.disc_weight = 50.0
  c.objective.temperature = 1.0
  # How replacements are drawn: 'inverse_cdf' (one uniform per masked slot) or 'gumbel' (the
  # original's Gumbel-max). Same distribution; inverse_cdf is far cheaper on CPU (measured in
  # benchmarks/README.md; objective.sample_replacements).
  c.objective.sampler = 'inverse_cdf'
  c.objective.disallow_correct = False
  c.objective.uniform_generator = False

  # ---- Optimizer (optim.py).
  c.optim = optim_config()

  # ---- Loop (train.py).
  c.log_every_steps = 100
  c.eval_every_steps = 10_000
  c.eval_steps = 50
  c.checkpoint_every_steps = 10_000
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  # A step whose loss or gradient norm is NaN or infinite is never applied (params and optimizer
  # state stay as they were; checked inside the jitted step) and the host sees it at its next log,
  # eval or checkpoint step. 'stop': the first one ends the run with an error naming the step and
  # the loss, nothing after the last good checkpoint being saved or exported. 'skip_step': such steps
  # are skipped and counted (nonfinite_steps in the log), and the run ends the same way only after
  # max_consecutive_nonfinite of them in a row.
  c.nan_policy = 'stop'
  c.max_consecutive_nonfinite = 10
  return c
