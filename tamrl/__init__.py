"""TAM-RL: Task-Aware Modulation with Representation Learning for upscaling carbon fluxes.

Rozanov, Renganathan and Kumar, arXiv 2603.09974 (2026).
"""

__version__ = "0.1.0"
