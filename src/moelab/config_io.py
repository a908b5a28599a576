"""How configs are read and checked: strict pydantic models, YAML as people write it, one-line errors.

    from moelab.config_io import StrictConfig, read_yaml, validate
    class MySection(StrictConfig): ...                     # unknown keys, inf/nan, `true` as a number: errors
    cfg = validate(MySection, read_yaml("x.yaml"), "x.yaml")  # UserError naming the first bad field

The configs themselves are in :mod:`moelab.config`.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from moelab.errors import UserError


def _scalar_kinds(annotation: Any) -> set[type]:
    """The scalar types a field annotation admits, looking through Optional, unions and lists."""
    origin = get_origin(annotation)
    if origin is None:
        return {annotation} if annotation in (bool, int, float, str) else set()
    if origin is Literal:
        return {type(v) for v in get_args(annotation)}
    kinds: set[type] = set()
    for arg in get_args(annotation):
        kinds |= _scalar_kinds(arg)
    return kinds


def _type_mismatch(value: Any, kinds: set[type]) -> str | None:
    """Why ``value`` is refused for a field admitting ``kinds`` (None when it is fine), stricter than
    pydantic's lax mode: ``true`` is not the number 1, ``"64"`` is not a number, ``1`` is not a boolean."""
    numeric = kinds & {int, float}
    if isinstance(value, bool):
        if bool not in kinds and numeric:
            return f"expected a number, got the boolean {str(value).lower()}"
    elif isinstance(value, str):
        if str not in kinds and numeric:
            return f"expected a number, got the string '{value}'"
        if str not in kinds and bool in kinds:
            return f"expected true or false, got the string '{value}'"
    elif isinstance(value, (int, float)) and bool in kinds and not numeric:
        return f"expected true or false, got {value}"
    return None


class StrictConfig(BaseModel):
    """Every config: unknown keys, non-finite numbers and mistyped scalars are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _strict_scalars(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            if name not in data:
                continue
            kinds = _scalar_kinds(field.annotation)
            if not kinds:
                continue
            values = data[name] if isinstance(data[name], list) else [data[name]]
            for value in values:
                problem = _type_mismatch(value, kinds)
                if problem:
                    raise PydanticCustomError("strict_scalar", "{field}: {problem}", {"field": name, "problem": problem})
        return data


def check_device_name(name: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; anything else is refused here, not deep in torch."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", name):
        raise ValueError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)")
    return name


DeviceName = Annotated[str, AfterValidator(check_device_name)]






def _did_you_mean(model_cls: type[BaseModel], loc: tuple[Any, ...], key: str) -> str:
    """Suggest the closest known field for an unknown key at ``loc``."""
    cls: Any = model_cls
    for part in loc[:-1]:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return ""
        ann = field.annotation
        # a section that may be None (``X | None``) is the model X
        candidates = [ann, *get_args(ann)]
        cls = next((a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if cls is None:
            return ""
    names = list(getattr(cls, "model_fields", {}))
    close = difflib.get_close_matches(str(key), names, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def format_validation_error(err: ValidationError, model_cls: type[BaseModel], source: str) -> str:
    """One line naming the first bad field of ``err``."""
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    where = ".".join(str(p) for p in loc)
    if first.get("type") == "extra_forbidden":
        return f"{source}: unknown key '{where}'{_did_you_mean(model_cls, loc, loc[-1] if loc else '')}"
    if first.get("type") == "strict_scalar":  # raised for the whole mapping: name the field itself
        ctx = first.get("ctx", {})
        where = ".".join(str(p) for p in (*loc, ctx.get("field", "")))
        return f"{source}: {where}: {ctx.get('problem', 'wrong type')}"
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    return f"{source}: {where}: {msg}" if where else f"{source}: {msg}"


def validate(model_cls: type[BaseModel], data: Any, source: str) -> Any:
    """Build ``model_cls`` from plain data, turning validation errors into one ``UserError`` line."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err, model_cls, source)) from None


class _Loader(yaml.SafeLoader):
    """YAML as people write configs: a repeated key is an error (PyYAML keeps the last silently), and
    ``1e9``/``3e-4`` are numbers (YAML 1.1 wants ``1.0e+9``; PyYAML reads ``1e9`` as a string)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error is a one-line ``UserError``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a YAML file")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}: invalid YAML{where}: {getattr(err, 'problem', None) or err}") from None


def dump_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

