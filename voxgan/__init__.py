"""voxgan: train and study generative adversarial networks of 3D voxel shapes."""

__version__ = "0.1.0"
