"""Anneal the softmax temperature of every DynamicConv2d while training."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..layers import DynamicConv2d


@HOOKS.register_module()
class DynamicConvTemperatureHook(Hook):
    """Linear temperature schedule for :class:`DynamicConv2d` attention.

    ``tau = end + (start - end) * max(0, 1 - progress / duration)`` before
    every training iteration, ``progress`` counted in epochs (fractional,
    ``by_epoch=True``) or iterations. DynamicConv (Chen et al. 2020) anneals
    from about 30 to 1 over the first 10 epochs; with a plain softmax
    (tau = 1 from the start) it trails the static network. The hook is
    stateless (tau follows the runner's epoch or iteration, so a resumed run
    continues the schedule); each layer keeps tau in its state dict, so a
    saved model evaluates at the temperature it was trained to. The value is
    logged as ``train/dynamic_conv_temperature``.

    Args:
        start (float): tau at the start. Default 30.
        end (float): tau after ``duration``. Default 1.
        duration (int): epochs (or iterations) of annealing. Default 10.
        by_epoch (bool): count ``duration`` in epochs. Default True.

    Example:
        >>> custom_hooks = [dict(type='DynamicConvTemperatureHook',
        ...                      duration=2000, by_epoch=False)]
    """

    priority = 'NORMAL'

    def __init__(self,
                 start: float = 30.,
                 end: float = 1.,
                 duration: int = 10,
                 by_epoch: bool = True) -> None:
        if duration <= 0 or start <= 0 or end <= 0:
            raise ValueError('start, end and duration must be positive; got '
                             f'start={start}, end={end}, '
                             f'duration={duration}.')
        self.start, self.end = float(start), float(end)
        self.duration, self.by_epoch = duration, by_epoch

    def temperature(self, progress: float) -> float:
        """tau after ``progress`` epochs or iterations."""
        remaining = max(0., 1. - progress / self.duration)
        return self.end + (self.start - self.end) * remaining

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        if self.by_epoch:
            progress = runner.epoch + batch_idx / max(
                len(runner.train_dataloader), 1)
        else:
            progress = runner.iter
        tau = self.temperature(progress)
        layers = [
            m for m in runner.model.modules() if isinstance(m, DynamicConv2d)
        ]
        for layer in layers:
            layer.set_temperature(tau)
        if layers:
            runner.message_hub.update_scalar('train/dynamic_conv_temperature',
                                             tau)
