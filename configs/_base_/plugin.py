# What every config of this project inherits:
#     _base_ = ['mmdet::...', '../_base_/plugin.py']
# `mmplug_involution` registers the layers and models (plain `type=` names);
# `mmplug_involution.runtime` makes the stock tools load checkpoints safely
# on current torch and provides the runner below (atomic checkpoint writes,
# resume from the newest complete checkpoint). README: "What the package
# changes outside itself".
custom_imports = dict(
    imports=['mmplug_involution', 'mmplug_involution.runtime'],
    allow_failed_imports=False)
runner_type = 'SafeCheckpointRunner'
