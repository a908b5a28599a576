"""Post-training: GRPO with verifiable rewards.

    from moelab.posttrain.grpo import GRPOConfig, grpo            # the run (torch, the model)
    from moelab.posttrain.advantages import group_advantages, grpo_loss   # the pure arithmetic
    from moelab.posttrain.cli import add_posttrain_commands       # `moelab grpo` and `moelab ttc`

Import from the modules; this package file stays import-light.
"""
