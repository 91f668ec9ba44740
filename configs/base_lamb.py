r"""ELECTRA-Base with LAMB and a large batch: NVIDIA's ELECTRA pre-training recipe (phase 1).

  python -m electra_jax.main --config=configs/base_lamb.py --workdir=DIR \
      --config.data.corpus='/path/to/text/*.txt' --config.data.vocab=/path/to/vocab.txt \
      --config.grad_accum_steps=N   # as many microbatches as the devices' memory needs

Source: NVIDIA DeepLearningExamples, TensorFlow2/LanguageModeling/ELECTRA,
scripts/configs/pretrain_config.sh (dgxa100_8gpu_amp): LAMB, phase 1 at sequence length 128 with
176 sequences per GPU x 8 GPUs x 48 accumulation steps = 67,584 sequences per step, learning rate
6e-3, 2,000 warmup steps, 10,000 steps; phase 2 at length 512 with 24 x 8 x 144 = 27,648
sequences, learning rate 4e-3, 200 warmup steps, 933 steps. Phase 2 is a second run started from
phase 1's weights:

  python -m electra_jax.main --config=configs/base_lamb.py --workdir=DIR2 \
      --config.init_checkpoint=DIR --config.max_seq_length=512 --config.batch_size=27648 \
      --config.optim.learning_rate=4e-3 --config.optim.warmup_steps=200 \
      --config.num_train_steps=933 --config.data.data_dir=DIR2/data

Everything else is configs/base.py's (ELECTRA-Base sizes, generator 1/3, mask 15%, weight decay
0.01 off LayerNorm and biases, clip at global norm 1.0, the overlapping warmup and linear decay).
Expected (NVIDIA's README): SQuAD v1.1 dev F1 ~92.7 / v2.0 ~86 after fine-tuning. Needs a large
accelerator slice; not measured here.
"""
from configs import base


def get_config():
  c = base.get_config()
  c.batch_size = 67_584
  c.max_seq_length = 128
  c.num_train_steps = 10_000
  c.optim.name = 'lamb'
  c.optim.learning_rate = 6e-3
  c.optim.warmup_steps = 2_000
  return c
