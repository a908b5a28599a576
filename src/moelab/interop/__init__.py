"""Interoperability with other ecosystems (Hugging Face Mixtral checkpoints)."""

from moelab.interop.hf import (
    config_from_hf,
    config_to_hf,
    export_hf,
    import_hf,
    state_dict_from_hf,
    state_dict_to_hf,
)

__all__ = ["config_from_hf", "config_to_hf", "export_hf", "import_hf", "state_dict_from_hf", "state_dict_to_hf"]
