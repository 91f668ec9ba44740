"""Fine-tuning on top of the pre-training core: GLUE-style classification/regression, sequence tagging
and extractive QA. Entry point: `electra_jax.finetune.loop.run(config, workdir)`."""
