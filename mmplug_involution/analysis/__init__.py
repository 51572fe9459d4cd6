"""Parameter and FLOP counts of models built with the package's layers."""
from .complexity import (attention_flop_jit, complexity_handles,
                         generated_involution_flop_jit, involution_flop_jit,
                         model_complexity)

__all__ = [
    'attention_flop_jit', 'complexity_handles',
    'generated_involution_flop_jit', 'involution_flop_jit', 'model_complexity'
]
