"""Grow mixup's alpha over the first epochs, as the DCD authors train."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class MixupAlphaRampHook(Hook):
    """Mixup's alpha grows linearly from 0 over the first ``ramp_epochs``.

    Before training epoch ``e`` (from 0), every mmpretrain ``Mixup`` batch
    augment of the model's data preprocessor gets ``alpha = target * e /
    ramp_epochs``, ``target`` the alpha the config gives it; from
    ``ramp_epochs`` on, ``target``. At ``alpha = 0`` the batch augments are
    off for the epoch (Beta(0, 0) has no samples; no mixing), the labels
    staying one-hot scores. This is the DCD authors' schedule (their
    ``main.py``: ``--mixup`` times ``epoch / 100`` for the first 100
    epochs). The hook is stateless (alpha follows the runner's epoch, so a
    resumed run continues the schedule) and logs ``train/mixup_alpha``.

    Args:
        ramp_epochs (int): epochs to reach the target alpha. Default 100.

    Example:
        >>> custom_hooks = [dict(type='MixupAlphaRampHook', ramp_epochs=100)]
    """

    priority = 'NORMAL'

    def __init__(self, ramp_epochs: int = 100) -> None:
        if not isinstance(ramp_epochs, int) or ramp_epochs < 1:
            raise ValueError(f'ramp_epochs must be an integer >= 1, got '
                             f'{ramp_epochs!r}.')
        self.ramp_epochs = ramp_epochs

    def before_train(self, runner) -> None:
        """Find the Mixup augments and their target alphas."""
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        self.preprocessor = model.data_preprocessor
        self.batch_augments = getattr(self.preprocessor, 'batch_augments',
                                      None)
        self.mixups = [
            (augment, augment.alpha)
            for augment in getattr(self.batch_augments, 'augments', [])
            if type(augment).__name__ == 'Mixup'
        ]
        if not self.mixups:
            raise ValueError(
                'MixupAlphaRampHook found no Mixup batch augment: add '
                "model.train_cfg.augments=dict(type='Mixup', alpha=...) or "
                'remove the hook.')

    def alpha_factor(self, epoch: int) -> float:
        """The fraction of the target alpha used in ``epoch``."""
        return min(epoch / self.ramp_epochs, 1.)

    def before_train_epoch(self, runner) -> None:
        factor = self.alpha_factor(runner.epoch)
        for augment, target in self.mixups:
            augment.alpha = target * factor
        self.preprocessor.batch_augments = (
            self.batch_augments if factor > 0 else None)
        runner.message_hub.update_scalar('train/mixup_alpha',
                                         self.mixups[0][1] * factor)
