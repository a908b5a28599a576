"""moelab: Mixture-of-Experts sparsity studies."""
__version__ = "0.1.0"
