"""Export views, evaluation and assets of the seqfake method (:mod:`methods.seqfake`)."""
