"""softmax-derive: derive softmax-regression gradients symbolically, check every step, export the
derivation as notes, and emit verified, accurate NumPy, PyTorch, JAX and array-API code from the
same expressions."""

__version__ = "0.1.0"
