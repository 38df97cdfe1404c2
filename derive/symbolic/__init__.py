"""The symbolic core: steps and their checks (`steps`), the rewrites they replay (`rewrites`), the
stable kernels as SymPy functions (`functions`), the accurate forms (`accurate`), decisions, and
explicit concrete-size instances for elementwise proofs (`explicit`). It knows no particular loss:
`derive.losses` builds derivations from it."""
