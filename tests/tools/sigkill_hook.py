"""A hook that SIGKILLs every training process right after the checkpoint
of a given iteration is on disk (the tests' stand-in for a crash)."""
import os
import signal

from mmengine.dist import barrier
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SigkillAfterCheckpoint(Hook):
    priority = 'LOWEST'  # after the checkpoint hook's after_train_iter

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            barrier()  # rank 0 has written the checkpoint
            os.kill(os.getpid(), signal.SIGKILL)
