"""Data sets and samplers: Fashion-MNIST (IDX), long-tailed subsets, qMIL bags,
ImageFolder trees, CIFAR, and the Seq-DeepFake layout."""
