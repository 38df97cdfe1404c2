"""The outputs of a checked derivation: printers (`printers`, the only place an expression becomes
a string), the notes (`notes`, `layout`, `pdf`), the emitted modules (`codegen` for NumPy,
`frameworks` for PyTorch, JAX and the array API) and the build that writes them (`build`,
`manifest`, `loader`). Nothing here derives: it prints what `derive.losses` proved."""
