# Imports mmplug_involution when a config is loaded, so that stock mmdet/mmseg
# tools find its layers by plain name and load checkpoints safely on current
# torch. Every config of this project inherits it:
#     _base_ = ['mmdet::...', '../_base_/plugin.py']
custom_imports = dict(
    imports=['mmplug_involution'], allow_failed_imports=False)
