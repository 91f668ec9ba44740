"""electra_jax: ELECTRA pre-training and fine-tuning in JAX/Flax."""
import setuptools

setuptools.setup(
    name="electra_jax",
    version="0.1.0",
    description="ELECTRA pre-training and fine-tuning in JAX/Flax",
    packages=setuptools.find_packages(include=["electra_jax", "electra_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.7",
        "flax>=0.11",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "tensorflow-cpu>=2.18; platform_machine=='x86_64'",
        "tensorflow>=2.18; platform_machine!='x86_64'",
        "tensorflow-datasets>=4.9",
        "tensorboard>=2.18",
        "sentencepiece>=0.2",
        "tokenizers>=0.20",
        "safetensors>=0.4",
        # orbax asks it whether a gs:// bucket has a hierarchical namespace before it saves there
        "google-cloud-storage>=2.0",
        "ml-collections>=1.0",
        "absl-py>=2.0",
        "numpy>=1.26",
    ],
    extras_require={
        # torch + transformers: only tests/test_convert.py (logit parity with HF); conversion
        # itself needs neither.
        # pytest-xdist: test.sh runs the suite in one worker per core (up to 4).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "scikit-learn>=1.4", "torch>=2.4,<2.14",
                 "transformers>=4.40",
                 # tests/test_notebook.py executes notebooks/electra_quickstart.ipynb
                 "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29", "matplotlib>=3.8",
                 # tests/test_compile_tpu.py compiles for a TPU slice on the CPU (libtpu, the
                 # version matching jax; it has wheels for Linux x86-64 only)
                 "jax[tpu]; sys_platform == 'linux' and platform_machine == 'x86_64'",
                 # tests/test_gcs.py: a local GCS (with tests/gcs_emulator.py's proxy)
                 "gcp-storage-emulator>=2024.8"],
        "notebook": ["matplotlib>=3.8", "ipykernel>=6.29"],
        # TPU VMs, and --mode=compile anywhere: libtpu for the installed jax.
        "tpu": ["jax[tpu]"],
        # NVIDIA GPUs: jax's CUDA 12 plugin with CUDA and cuDNN from pip.
        "gpu": ["jax[cuda12]"],
    },
)
