"""Export views, evaluation and assets of the abcnorm method (:mod:`methods.abcnorm`)."""
