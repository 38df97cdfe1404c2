"""`derive train`: fit softmax regression using only the emitted module's gradient code.

The point of the command is to show the derived code doing real work: the model is evaluated
*only* through the emitted module's `loss_and_grad` (loss and fused gradient) and `predict`.
Nothing here computes a softmax, a cross-entropy or a gradient of its own, so a wrong derivation
shows up as a model that does not train, or as a gap to scikit-learn under `--compare-sklearn`.

Objective. Both optimizers minimise, over the n training samples,

    F(W, b) = (1/n) sum_i CE(y_i, softmax(x_i W + b)) + (l2 / 2) * ||W||_F^2

with W of shape (d, K), the bias b unpenalised (as scikit-learn does), `l2 = --l2`. The L2 term
and its gradient come from the emitted module too: the default module is
`generated/softmax_regression_l2.py`, whose `loss_and_grad(..., lam=l2)` returns F and its
gradient as derived (`derive.train.objective.weight_decay`).

- `--optimizer sgd` is minibatch SGD (`--preset d2l`: d2l's batch 256, lr 0.1, 10 epochs,
  W ~ N(0, 0.01^2), b = 0, no weight decay), the l2 term in every step's gradient.
- `--optimizer lbfgs` (the default, `--preset sklearn`, with `l2 = 1/n`: scikit-learn's default
  C = 1) hands F and its gradient to `scipy.optimize.minimize(method="L-BFGS-B")`
  on the full training set, starting from W = 0, b = 0, with the stopping rule scikit-learn uses
  (`gtol = --tol`, `ftol = 64 * eps`, `maxls = 50`).

scikit-learn's `LogisticRegression` minimises `C * sum_i CE_i + 1/2 ||W||^2` (multinomial loss,
bias unpenalised), which is `F / l2` when `C = 1 / (n * l2)`: the same minimiser. For two
classes scikit-learn fits one weight vector w = w_1 - w_0 instead of two; at F's minimum
w_0 = -w_1, so `||W||^2 = ||w||^2 / 2` and the equivalent is `C = 2 / (n * l2)`. `--compare-sklearn`
evaluates both objectives at both solutions so that this equivalence is checked numerically on
every run, not just asserted.
"""
