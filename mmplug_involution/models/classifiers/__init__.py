from .global_pool_classifier import GlobalPoolClassifier

__all__ = ['GlobalPoolClassifier']
