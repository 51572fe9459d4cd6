"""What makes the stock OpenMMLab tools work on current torch."""
from .checkpoint import (UnsafeCheckpointError, load_checkpoint_file,
                         register_safe_checkpoint_globals,
                         safe_checkpoint_globals)
from .complexity import (involution_flop_jit, model_complexity,
                         register_complexity_handles)

__all__ = [
    'involution_flop_jit', 'model_complexity', 'register_complexity_handles',
    'UnsafeCheckpointError', 'load_checkpoint_file',
    'register_safe_checkpoint_globals', 'safe_checkpoint_globals'
]
