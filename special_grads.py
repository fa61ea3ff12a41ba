"""Second derivative of max pooling.

The reference needed this module because TensorFlow before 1.2 had no
registered gradient for MaxPoolGrad, so second-order MAML through max pooling
failed. TensorFlow 2 registers an exact one (MaxPoolGrad -> MaxPoolGradGrad),
so there is nothing left to register; the module stays so that
`import special_grads` works as it did, and tests/test_special_grads.py checks
the second derivative against finite differences.
"""
