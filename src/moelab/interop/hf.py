"""Hugging Face Mixtral (and Qwen2-MoE) import/export.

A moelab model with the renormalised gate *is* a Mixtral model; only names and layouts differ.
Mixtral's class always renormalises the k chosen probabilities, so a model whose gate is the
probability itself (``router_norm`` none, and ``auto`` at k = 1) is exported as
``Qwen2MoeForCausalLM`` with ``norm_topk_prob: false``, no shared expert
(``shared_expert_intermediate_size: 0``) and no attention biases (``qkv_bias: false``): the same
computation, under the expert names ``gate_proj/up_proj/down_proj`` instead of ``w1/w3/w2``.
Both import; a Qwen2-MoE checkpoint with a shared expert, biases or dense layers is refused.
Mixtral weight names:

=====================================  ==========================================================
moelab                                  HF checkpoint (legacy layout, what transformers v5 writes)
=====================================  ==========================================================
``embed.weight``                        ``model.embed_tokens.weight``
``layers.i.attn_norm.weight``           ``model.layers.i.input_layernorm.weight``
``layers.i.attn.{q,k,v,o}_proj.weight`` ``model.layers.i.self_attn.{q,k,v,o}_proj.weight``
``layers.i.moe_norm.weight``            ``model.layers.i.post_attention_layernorm.weight``
``layers.i.moe.router.weight [E,D]``    ``model.layers.i.block_sparse_moe.gate.weight``
``layers.i.moe.experts.w_gate[e]`` ᵀ    ``model.layers.i.block_sparse_moe.experts.e.w1.weight [F,D]``
``layers.i.moe.experts.w_down[e]`` ᵀ    ``model.layers.i.block_sparse_moe.experts.e.w2.weight [D,F]``
``layers.i.moe.experts.w_up[e]`` ᵀ      ``model.layers.i.block_sparse_moe.experts.e.w3.weight [F,D]``
``norm.weight``                         ``model.norm.weight``
``lm_head.weight``                      ``lm_head.weight`` (absent when tied)
=====================================  ==========================================================

transformers v5 holds experts fused in memory (``mlp.gate.weight``, ``mlp.experts.gate_up_proj
[E,2F,D]`` = gate rows then up rows, ``mlp.experts.down_proj [E,D,F]``) but converts the legacy
per-expert layout on load and writes it back on save. We export the legacy layout (loadable by
transformers v4 and v5 and most other runtimes) and import either layout, plus the in-between
``mlp.experts.e.w1`` naming. Only safetensors are read: pickle checkpoints are refused.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from transformers import MixtralConfig, PretrainedConfig, Qwen2MoeConfig

from moelab.atomic import atomic_path, atomic_write_text
from moelab.config import ModelConfig, format_validation_error
from moelab.errors import UserError, one_line
from moelab.model.transformer import MoETransformer

_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MODEL_TYPES = ("mixtral", "qwen2_moe")  # the Hugging Face architectures moelab reads and writes
# Qwen2-MoE's per-expert names for moelab's w_gate, w_up, w_down (Mixtral's: w1, w3, w2)
_QWEN_EXPERT = {"w_gate": "gate_proj", "w_up": "up_proj", "w_down": "down_proj"}
_MIXTRAL_EXPERT = {"w_gate": "w1", "w_up": "w3", "w_down": "w2"}


def mixtral_can_represent(cfg: ModelConfig) -> bool:
    """Mixtral renormalises the chosen probabilities; with one expert the gate is 1 either way."""
    return cfg.renormalize_gate or cfg.num_experts == 1

# ---------------------------------------------------------------- configs


def config_to_hf(
    cfg: ModelConfig,
    *,
    router_aux_loss_coef: float = 1e-2,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> MixtralConfig | Qwen2MoeConfig:
    """The Hugging Face config with exactly this model's semantics (no sliding window, no
    dropout): ``MixtralConfig`` for a renormalised gate, else ``Qwen2MoeConfig`` (module docstring)."""
    if not mixtral_can_represent(cfg):
        return Qwen2MoeConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_hidden,
            moe_intermediate_size=cfg.ffn_hidden, shared_expert_intermediate_size=0,
            num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads,
            hidden_act="silu", max_position_embeddings=cfg.max_seq_len, initializer_range=cfg.init_std,
            rms_norm_eps=cfg.rms_eps, rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
            tie_word_embeddings=cfg.tie_embeddings, use_sliding_window=False, attention_dropout=0.0,
            decoder_sparse_step=1, mlp_only_layers=[], qkv_bias=False,
            num_experts=cfg.num_experts, num_experts_per_tok=cfg.top_k, norm_topk_prob=False,
            output_router_logits=False, router_aux_loss_coef=router_aux_loss_coef,
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
            architectures=["Qwen2MoeForCausalLM"],
        )
    return MixtralConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.ffn_hidden,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=cfg.max_seq_len,
        initializer_range=cfg.init_std,
        rms_norm_eps=cfg.rms_eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        tie_word_embeddings=cfg.tie_embeddings,
        sliding_window=None,
        attention_dropout=0.0,
        num_local_experts=cfg.num_experts,
        num_experts_per_tok=cfg.top_k,
        output_router_logits=False,
        router_aux_loss_coef=router_aux_loss_coef,
        router_jitter_noise=0.0,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        architectures=["MixtralForCausalLM"],
    )


def _as_hf_config(hf_config: PretrainedConfig | dict[str, Any], source: str) -> MixtralConfig | Qwen2MoeConfig:
    data = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
    model_type = data.get("model_type") or getattr(hf_config, "model_type", None)
    if model_type not in MODEL_TYPES:
        raise UserError(f"{source}: model_type is '{model_type}', moelab imports only Mixtral ('mixtral') "
                        "and Qwen2-MoE ('qwen2_moe') models")
    kind = MixtralConfig if model_type == "mixtral" else Qwen2MoeConfig
    if isinstance(hf_config, kind):
        return hf_config
    try:
        return kind.from_dict(data)
    except Exception as err:  # transformers validates values with its own exception types
        raise UserError(f"{source}: invalid {model_type} config: {str(err).splitlines()[0]}") from None


def _check_qwen2_moe(hf: Qwen2MoeConfig, source: str) -> None:
    """A Qwen2-MoE config moelab computes exactly: every layer a routed MoE, nothing shared, no biases."""
    if hf.shared_expert_intermediate_size:
        raise UserError(f"{source}: a shared expert (shared_expert_intermediate_size "
                        f"{hf.shared_expert_intermediate_size}) is not supported; moelab models route every token")
    if hf.qkv_bias:
        raise UserError(f"{source}: qkv_bias is true; moelab attention has no biases")
    if hf.decoder_sparse_step != 1 or hf.mlp_only_layers:
        raise UserError(f"{source}: dense layers (decoder_sparse_step/mlp_only_layers) are not supported")
    if getattr(hf, "use_sliding_window", False):
        raise UserError(f"{source}: use_sliding_window is true; moelab attends to the full context")


def _router_norm(renormalize: bool, top_k: int) -> str:
    """The canonical ``router_norm`` for a gate: ``auto`` wherever it gives the same gate."""
    return "auto" if renormalize == (top_k >= 2) else ("renormalize" if renormalize else "none")


def config_from_hf(hf_config: PretrainedConfig | dict[str, Any], *, source: str = "config") -> ModelConfig:
    """``ModelConfig`` for a Mixtral or Qwen2-MoE config (object or ``config.json`` dict); any
    other architecture, or a variant moelab cannot reproduce, is a one-line ``UserError``.

    The gate comes from the architecture: Mixtral always renormalises, Qwen2-MoE as its
    ``norm_topk_prob`` says. ``router_norm`` is written as ``auto`` wherever that is the same gate."""
    hf = _as_hf_config(hf_config, source)
    if isinstance(hf, Qwen2MoeConfig):
        _check_qwen2_moe(hf, source)
        num_experts, hidden, renormalize = hf.num_experts, hf.moe_intermediate_size, bool(hf.norm_topk_prob)
    else:
        num_experts, hidden, renormalize = hf.num_local_experts, hf.intermediate_size, True
    heads = hf.num_attention_heads
    if hf.hidden_size % heads:
        raise UserError(f"{source}: hidden_size {hf.hidden_size} is not divisible by {heads} heads")
    if getattr(hf, "head_dim", None) not in (None, hf.hidden_size // heads):
        raise UserError(f"{source}: head_dim {hf.head_dim} != hidden_size/num_attention_heads; moelab derives it")
    if hf.hidden_act != "silu":
        raise UserError(f"{source}: hidden_act '{hf.hidden_act}' is not supported (moelab experts are SwiGLU)")
    rope = hf.rope_parameters or {}
    if rope.get("rope_type", "default") != "default":
        raise UserError(f"{source}: rope_type '{rope.get('rope_type')}' is not supported (only default RoPE)")
    if getattr(hf, "sliding_window", None) and isinstance(hf, MixtralConfig) and hf.sliding_window < hf.max_position_embeddings:
        warnings.warn(
            f"{source}: sliding_window={hf.sliding_window} is ignored; moelab attends to the full context,"
            " so sequences longer than the window will differ from transformers",
            stacklevel=2,
        )
    kv_heads = hf.num_key_value_heads or heads
    d_model = hf.hidden_size
    try:
        return ModelConfig(
            vocab_size=hf.vocab_size,
            d_model=d_model,
            n_layers=hf.num_hidden_layers,
            n_heads=heads,
            n_kv_heads=None if kv_heads == heads else kv_heads,
            num_experts=num_experts,
            top_k=hf.num_experts_per_tok,
            router_norm=_router_norm(renormalize, hf.num_experts_per_tok),
            # Keep the default ffn_mult rule when it already gives this width (exact round trip).
            expert_hidden=None if hidden == round(ModelConfig.model_fields["ffn_mult"].default * d_model) else hidden,
            max_seq_len=hf.max_position_embeddings,
            rope_theta=float(rope.get("rope_theta", type(hf).default_theta)),
            rms_eps=hf.rms_norm_eps,
            tie_embeddings=bool(hf.tie_word_embeddings),
            init_std=hf.initializer_range,
        )
    except ValidationError as err:
        raise UserError(format_validation_error(err, ModelConfig, source)) from None


# ---------------------------------------------------------------- state dicts


def state_dict_to_hf(sd: dict[str, torch.Tensor], *, layout: str = "legacy", model_type: str = "mixtral") -> dict[str, torch.Tensor]:
    """moelab weights → HF names of ``model_type`` (``mixtral`` or ``qwen2_moe``). ``layout='legacy'``
    writes per-expert matrices (the on-disk format), ``'fused'`` the in-memory transformers v5
    ``gate_up_proj/down_proj``. A ``qwen2_moe`` model gets an empty shared expert and a zero shared
    gate (its output is exactly zero). Tensors are made contiguous and unshared, as safetensors requires."""
    if layout not in ("legacy", "fused"):
        raise ValueError(f"layout must be 'legacy' or 'fused', got {layout!r}")
    assert model_type in MODEL_TYPES, model_type
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": sd["embed.weight"], "model.norm.weight": sd["norm.weight"]}
    if "lm_head.weight" in sd:
        out["lm_head.weight"] = sd["lm_head.weight"]
    num_layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.", k)))
    qwen = model_type == "qwen2_moe"
    moe_name = "block_sparse_moe" if layout == "legacy" and not qwen else "mlp"
    names = _QWEN_EXPERT if qwen else _MIXTRAL_EXPERT
    for i in range(num_layers):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        out[dst + "input_layernorm.weight"] = sd[src + "attn_norm.weight"]
        out[dst + "post_attention_layernorm.weight"] = sd[src + "moe_norm.weight"]
        for name in _ATTN:
            out[dst + f"self_attn.{name}.weight"] = sd[src + f"attn.{name}.weight"]
        router_ED = sd[src + "moe.router.weight"]
        out[dst + f"{moe_name}.gate.weight"] = router_ED
        experts_EOI = {w: sd[src + f"moe.experts.{w}"].transpose(1, 2) for w in names}  # nn.Linear layout
        if layout == "fused":
            out[dst + "mlp.experts.gate_up_proj"] = torch.cat([experts_EOI["w_gate"], experts_EOI["w_up"]], dim=1)
            out[dst + "mlp.experts.down_proj"] = experts_EOI["w_down"]
        else:
            for e in range(router_ED.shape[0]):
                for w, hf_name in names.items():
                    out[dst + f"{moe_name}.experts.{e}.{hf_name}.weight"] = experts_EOI[w][e]
        if qwen:
            D = router_ED.shape[1]
            for name, shape in (("gate_proj", (0, D)), ("up_proj", (0, D)), ("down_proj", (D, 0))):
                out[dst + f"mlp.shared_expert.{name}.weight"] = router_ED.new_zeros(shape)
            out[dst + "mlp.shared_expert_gate.weight"] = router_ED.new_zeros((1, D))
    return {k: v.detach().contiguous() for k, v in out.items()}


def state_dict_from_hf(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """HF Mixtral weights (legacy per-expert or v5 fused layout) → moelab names for ``cfg``.

    Missing or unexpected tensors are a ``UserError`` naming the first few."""
    # One spelling for everything: drop the "model." prefix, block_sparse_moe → mlp, Qwen2-MoE's
    # expert names → Mixtral's.
    hf = {re.sub(r"^model\.", "", k).replace(".block_sparse_moe.", ".mlp."): v for k, v in sd.items()}
    hf = {re.sub(r"(\.experts\.\d+\.)(gate_proj|up_proj|down_proj)\.",
                 lambda m: m.group(1) + {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}[m.group(2)] + ".", k): v
          for k, v in hf.items()}
    hf = {k: v for k, v in hf.items() if not k.endswith("rotary_emb.inv_freq")}  # old checkpoints saved it
    used: set[str] = set()
    for k, v in hf.items():  # Qwen2-MoE's shared expert: empty (checked in the config), its gate then unused
        if ".mlp.shared_expert" in k:
            if ".mlp.shared_expert." in k and v.numel():
                raise UserError(f"HF checkpoint has a non-empty shared expert ('{k}'); moelab routes every token")
            used.add(k)

    def take(key: str) -> torch.Tensor:
        if key not in hf:
            raise UserError(f"HF checkpoint lacks tensor '{key}' (for {cfg.n_layers} layers, {cfg.num_experts} experts)")
        used.add(key)
        return hf[key]

    out = {"embed.weight": take("embed_tokens.weight"), "norm.weight": take("norm.weight")}
    if cfg.tie_embeddings:
        used.add("lm_head.weight")  # some tied checkpoints still store the copy; it is the embedding
    else:
        out["lm_head.weight"] = take("lm_head.weight")
    F = cfg.ffn_hidden
    for i in range(cfg.n_layers):
        src, dst = f"layers.{i}.", f"layers.{i}."
        out[dst + "attn_norm.weight"] = take(src + "input_layernorm.weight")
        out[dst + "moe_norm.weight"] = take(src + "post_attention_layernorm.weight")
        for name in _ATTN:
            out[dst + f"attn.{name}.weight"] = take(src + f"self_attn.{name}.weight")
        out[dst + "moe.router.weight"] = take(src + "mlp.gate.weight")
        if src + "mlp.experts.gate_up_proj" in hf:
            gate_up_E2FD = take(src + "mlp.experts.gate_up_proj")
            gate_EFD, up_EFD = gate_up_E2FD[:, :F], gate_up_E2FD[:, F:]
            down_EDF = take(src + "mlp.experts.down_proj")
        else:
            experts = [f"{src}mlp.experts.{e}." for e in range(cfg.num_experts)]
            gate_EFD = torch.stack([take(p + "w1.weight") for p in experts])
            down_EDF = torch.stack([take(p + "w2.weight") for p in experts])
            up_EFD = torch.stack([take(p + "w3.weight") for p in experts])
        out[dst + "moe.experts.w_gate"] = gate_EFD.transpose(1, 2).contiguous()
        out[dst + "moe.experts.w_up"] = up_EFD.transpose(1, 2).contiguous()
        out[dst + "moe.experts.w_down"] = down_EDF.transpose(1, 2).contiguous()
    extra = sorted(set(hf) - used)
    if extra:
        raise UserError(f"HF checkpoint has {len(extra)} tensor(s) a {cfg.n_layers}-layer model does not use, e.g. '{extra[0]}'")
    return out


# ---------------------------------------------------------------- directories


def export_hf(model: MoETransformer, cfg: ModelConfig, out_dir: str | Path, tokenizer: Any = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ tokenizer files) that
    ``MixtralForCausalLM.from_pretrained(out_dir)`` loads with no missing or unexpected keys
    (``Qwen2MoeForCausalLM`` for a gate Mixtral cannot represent: module docstring).

    The exported tokenizer adds BOS by itself, as Mixtral's does (:func:`moelab.data.tokenizer.adding_bos`):
    ``AutoTokenizer.from_pretrained(out_dir)("text")`` is ``BOS + ids``, what moelab trained and evaluates
    on, so lm-eval, vLLM and TRL condition on the same first token without being told."""
    out = Path(out_dir)
    ids = {}
    if tokenizer is not None:
        from moelab.data.tokenizer import adding_bos

        tokenizer = adding_bos(tokenizer)  # before anything is written: it refuses a tokenizer it cannot fix
        ids = {k: getattr(tokenizer, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    out.mkdir(parents=True, exist_ok=True)
    hf_cfg = config_to_hf(cfg, **ids)
    hf_cfg.dtype = model.embed.weight.dtype  # recorded as "dtype" in config.json
    tensors = state_dict_to_hf({k: v.cpu() for k, v in model.state_dict().items()}, model_type=hf_cfg.model_type)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})  # transformers requires format=pt
    data = json.loads(hf_cfg.to_json_string())  # diff vs. base defaults, as save_pretrained writes
    data["rope_theta"] = float(cfg.rope_theta)  # the pre-v5 spelling, for older readers; v5 ignores it
    atomic_write_text(out / "config.json", json.dumps(data, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        from moelab.data.tokenizer import save_tokenizer

        save_tokenizer(tokenizer, out)  # atomic files, a class name transformers 4 and 5 both load
    return out


def weight_files(hf_dir: str | Path) -> list[Path]:
    """The safetensors files of a Hugging Face directory (one file, or the shards its index lists),
    checked to exist; nothing is read. Pickle-only weights and missing shards are a ``UserError``."""
    hf_dir = Path(hf_dir)
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise UserError(f"{index}: not a safetensors index (no weight_map)") from None
        files = [hf_dir / s for s in shards]
    elif (hf_dir / "model.safetensors").is_file():
        files = [hf_dir / "model.safetensors"]
    else:
        pickled = list(hf_dir.glob("*.bin")) + list(hf_dir.glob("*.pt")) + list(hf_dir.glob("*.pth"))
        if pickled:
            raise UserError(
                f"{hf_dir}: only pickle weights ({pickled[0].name}); moelab reads safetensors only"
                " (convert with transformers: load, then save_pretrained(safe_serialization=True))"
            )
        raise UserError(f"{hf_dir}: no model.safetensors or model.safetensors.index.json")
    for f in files:
        if not f.is_file():
            raise UserError(f"{hf_dir}: shard {f.name} listed in the index is missing")
    return files


def _read_safetensors(hf_dir: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for f in weight_files(hf_dir):
        try:
            sd.update(load_file(f, device=str(device)))
        except Exception as err:  # safetensors' own error type on a damaged or truncated file
            first = one_line(err)
            raise UserError(f"{f}: unreadable safetensors file ({first}); the checkpoint is damaged or "
                            "incomplete: copy or export it again") from None
    return sd


def read_hf_config(hf_dir: str | Path) -> ModelConfig:
    """The ``ModelConfig`` of a Hugging Face Mixtral or Qwen2-MoE directory's ``config.json`` (weights unread)."""
    hf_dir = Path(hf_dir)
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{hf_dir}: no config.json (not a Hugging Face model directory)")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{config_path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{config_path}: not a JSON object")
    return config_from_hf(data, source=str(config_path))


def import_hf(
    hf_dir: str | Path, *, dtype: torch.dtype | None = torch.float32, device: str | torch.device = "cpu"
) -> tuple[ModelConfig, MoETransformer]:
    """Load a Hugging Face Mixtral or Qwen2-MoE directory as ``(ModelConfig, MoETransformer)``.

    Weights are cast to ``dtype`` (fp32 by default, the training/eval convention; ``None`` keeps
    the stored dtype). The model is returned in eval mode."""
    hf_dir = Path(hf_dir)
    cfg = read_hf_config(hf_dir)
    try:
        sd = state_dict_from_hf(_read_safetensors(hf_dir, device), cfg)
        if dtype is not None:
            sd = {k: v.to(dtype) for k, v in sd.items()}
        with torch.device("meta"):  # skip a random init that load_state_dict would overwrite
            model = MoETransformer(cfg)
        model.load_state_dict(sd, strict=True, assign=True)
    except (KeyError, RuntimeError) as err:  # a tensor missing, extra or of the wrong shape for config.json
        first = one_line(err)
        raise UserError(f"{hf_dir}: weights do not match config.json ({first})") from None
    return cfg, model.eval()
