"""Image data for the ``imagenet-lt`` suite: IDX / CIFAR / ImageNet-LT readers, LT profiles."""
