"""The losses: a loss as data (`model`), the catalogue (`definitions`, `catalogue`), the user's
own (`user_model`, `formula`), the calculus every loss goes through (`calculus`) and the checked
derivations (`derivation`, and `softmax_regression`, the notes' story). Everything printed later
is a right-hand side of a step made here."""
