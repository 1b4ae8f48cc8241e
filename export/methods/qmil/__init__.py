"""Export views, evaluation and assets of the qmil method (:mod:`methods.qmil`)."""
