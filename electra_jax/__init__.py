"""electra_jax: ELECTRA (Clark et al., 2020) pre-training and fine-tuning in JAX/Flax.

Importing the package touches no device and parses no flag; see WORKSPACE.md for the layout.
"""
