"""The only place an expression becomes a string: SymPy printers, one module per audience.

Every printer here is a SymPy printer subclass (one dispatcher, `_print_<Class>` methods, tables of
"this function prints as that call"), as STYLE.md asks; nothing else in `derive` builds math as
text. The modules, lowest first (each imports only those before it):

- `code_format`: printed Python statements laid out as `ruff format` would (no SymPy).
- `latex`: the notes' LaTeX (`NotesLatexPrinter`, the sides and terms of an equation).
- `vector`: whole-array NumPy code for the emitted module (`VectorPrinter`, assignments with
  common subexpressions and the fused softmax/log-sum-exp kernel).
- `framework_vectors`: the same whole-array code for PyTorch, JAX and the array API standard,
  and `PRINTERS`, the printer of each emit target.
- `ranges`: a parameter's declared range as a Python condition (the emitted range checks).
- `reference`: the mpmath reference functions `derive verify` evaluates to 50 digits and more.

Import a printer from its own module; this package re-exports nothing.
"""
