"""jaxdarts: reinforcement-learning-driven DARTS architecture search in JAX/Flax.

Reimplements Shah, "Exploring the Landscape of Differentiable Architecture Search with
Reinforcement Learning". Heavy modules (TFDS, matplotlib) are imported lazily.
"""

__version__ = "0.1.0"

from jaxdarts.genotypes import PUBLISHED, Genotype, derive_genotype, load_genotype
from jaxdarts.spaces import SPACES, SearchSpace, get_space
from jaxdarts.supernet import Supernet, SupernetConfig

__all__ = [
    "Genotype",
    "PUBLISHED",
    "SPACES",
    "SearchSpace",
    "Supernet",
    "SupernetConfig",
    "derive_genotype",
    "get_space",
    "load_genotype",
]
