"""dataspace: a trusted data space node.

Each organisation runs a node that registers its datasets (profiled, classified, graded),
enforces usage policies where the data is, and keeps a verifiable Merkle log of every
state change.
"""

__version__ = "0.1.0"
