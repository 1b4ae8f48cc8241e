"""Export views, evaluation and assets of the dcl method (:mod:`methods.dcl`)."""
