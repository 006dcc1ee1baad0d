"""mmkd_jax: multimodal knowledge distillation for video action recognition, in JAX/Flax."""
from setuptools import find_packages, setup

# Upper bounds are the newest releases CI has run against (Python 3.11: JAX 0.10.x).
INSTALL_REQUIRES = [
    "absl-py>=2.1,<3",
    "numpy>=1.26,<3",
    "jax>=0.10.2,<0.13",
    "flax>=0.12,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12,<0.13",
    "ml_collections>=1.1,<2",
    "clu>=0.0.12,<0.1",
    "tensorboard>=2.20,<3",
    # TF is only imported by the input pipeline (mmkd_jax/data) and the dataset builders.
    "tensorflow-cpu>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<5",
    "opencv-contrib-python-headless>=4.10,<6",  # contrib: TV-L1 optical flow
    "av>=14,<19",  # PyAV: decodes .webm (VP9) without an ffmpeg binary
    "safetensors>=0.4,<1",
    "matplotlib>=3.8,<4",
]

EXTRAS = {
    "test": ["pytest>=8,<10", "ruff>=0.6,<1", "nbclient>=0.10,<1", "nbformat>=5.10,<6",
             "ipykernel>=6.29,<8"],
    # Reference implementations for the parity tests and the PyTorch benchmark baseline only;
    # the library never imports torch. `pip install torch==2.13.0` takes the local CPU wheel.
    "parity": ["torch==2.13.0", "transformers>=4.40,<6"],
    # Dataset builds on Apache Beam and the official `tfds build` CLI (which imports
    # apache_beam and mlcroissant at start-up). Beam 2.78 needs protobuf < 7 and pyarrow < 26;
    # TF 2.21 accepts protobuf 6.31+. For Dataflow add GCP: `pip install "apache-beam[gcp]"`.
    "beam": ["apache-beam>=2.78,<2.79", "mlcroissant>=1.1,<2", "protobuf>=6.31.1,<7"],
}

setup(
    name="mmkd_jax",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["mmkd_jax", "mmkd_jax.*", "data_prep", "data_prep.*"]),
    package_data={"mmkd_jax": ["pretrained/*.npz", "pretrained/README.md"]},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
