"""What makes the stock OpenMMLab tools work on current torch."""
from .checkpoint import (UnsafeCheckpointError, load_checkpoint_file,
                         register_safe_checkpoint_globals,
                         safe_checkpoint_globals)

__all__ = [
    'UnsafeCheckpointError', 'load_checkpoint_file',
    'register_safe_checkpoint_globals', 'safe_checkpoint_globals'
]
