"""softmax-derive: derive softmax-regression gradients symbolically, check every step, export the
derivation as notes, and emit verified, numerically stable NumPy code from the same expressions."""

__version__ = "0.1.0"
