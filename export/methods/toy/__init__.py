"""Export views, evaluation and assets of the toy method (:mod:`methods.toy`)."""
