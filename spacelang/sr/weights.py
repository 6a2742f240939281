"""Loading weights made by another implementation of the same network.

Tensors are matched by name only: the same name when the spec uses the
checkpoint's names, otherwise through a rename map. Shapes are checked; a
tensor with no home, a tensor two rules send to different homes, two tensors
sent to one home and a weight left without a tensor are all errors that name
the tensor. Nothing is ever matched by shape or by order.

A rename map is a small YAML file:

    checkpoint_key: state_dict     # optional: the dict inside the file that holds tensors
    strip_prefix: "module."        # optional: removed from every key first
    ignore: ["^total_ops$"]        # optional: checkpoint keys to drop (regexes)
    rename:                        # regex (whole key) -> replacement, \\1 for groups
      '^fea_conv\\.(.*)$': 'fea.\\1'
      '^B(\\d+)\\.c(\\d)_d\\.(.*)$': 'b.\\1.d\\2.\\3'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from attrs import frozen
from torch import nn

from spacelang.runtime.checkpoint import CheckpointError, load_checkpoint


class WeightsError(Exception):
    """Weights that do not fit the network; the message names the tensor."""


@frozen
class RenameMap:
    rules: tuple[tuple[re.Pattern, str], ...] = ()
    strip_prefix: str = ""
    checkpoint_key: str | None = None
    ignore: tuple[re.Pattern, ...] = ()

    def target(self, key: str) -> str | None:
        """Where checkpoint tensor `key` goes; None when ignored."""
        if self.strip_prefix and key.startswith(self.strip_prefix):
            key = key[len(self.strip_prefix):]
        if any(p.fullmatch(key) for p in self.ignore):
            return None
        homes = {pattern.sub(replacement, key) for pattern, replacement in self.rules
                 if pattern.fullmatch(key)}
        if len(homes) > 1:
            raise WeightsError(f"checkpoint tensor {key!r} has two possible homes: "
                               f"{', '.join(sorted(homes))}; make the rename rules exclusive")
        return homes.pop() if homes else key


def load_rename_map(path: str | Path) -> RenameMap:
    """Read a rename map YAML; raises `WeightsError` with the file name on any problem."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights map") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise WeightsError(f"{path}: cannot read weights map: {exc}") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: a weights map is a mapping with `rename:` rules")
    unknown = set(data) - {"rename", "strip_prefix", "checkpoint_key", "ignore"}
    if unknown:
        raise WeightsError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; "
                           "expected rename, strip_prefix, checkpoint_key, ignore")
    rename = data.get("rename") or {}
    if not isinstance(rename, dict):
        raise WeightsError(f"{path}: `rename` must map patterns to replacements")
    rules = []
    for pattern, replacement in rename.items():
        try:
            compiled = re.compile(str(pattern))
        except re.error as exc:
            raise WeightsError(f"{path}: bad pattern {pattern!r}: {exc}") from None
        try:  # parses the template (group references) even without a match
            compiled.sub(str(replacement), "")
        except (re.error, IndexError) as exc:
            raise WeightsError(f"{path}: bad replacement {replacement!r} for {pattern!r}: "
                               f"{exc}") from None
        rules.append((compiled, str(replacement)))
    ignore_patterns = data.get("ignore") or []
    if isinstance(ignore_patterns, str):
        ignore_patterns = [ignore_patterns]
    if not isinstance(ignore_patterns, list):
        raise WeightsError(f"{path}: `ignore` must be a list of patterns")
    ignore = []
    for pattern in ignore_patterns:
        try:
            ignore.append(re.compile(str(pattern)))
        except re.error as exc:
            raise WeightsError(f"{path}: bad ignore pattern {pattern!r}: {exc}") from None
    return RenameMap(tuple(rules), str(data.get("strip_prefix") or ""),
                     data.get("checkpoint_key"), tuple(ignore))


def checkpoint_tensors(payload: Mapping[str, Any], mapping: RenameMap,
                       path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint, from `checkpoint_key` or a usual place."""
    source: Any = payload
    if mapping.checkpoint_key:
        if mapping.checkpoint_key not in payload:
            raise WeightsError(f"{path}: no {mapping.checkpoint_key!r} in the checkpoint "
                               f"(keys: {', '.join(map(str, list(payload)[:8]))})")
        source = payload[mapping.checkpoint_key]
        if not isinstance(source, Mapping):
            raise WeightsError(f"{path}: {mapping.checkpoint_key!r} in the checkpoint holds a "
                               f"{type(source).__name__}, not a dict of tensors")
    elif not all(isinstance(v, torch.Tensor) for v in payload.values()):
        for key in ("model", "state_dict", "params", "params_ema"):
            if isinstance(payload.get(key), Mapping):
                source = payload[key]
                break
    tensors = {k: v for k, v in source.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path}: holds no tensors; is it a checkpoint of a network?")
    return tensors


def map_state_dict(model: nn.Module, tensors: Mapping[str, torch.Tensor],
                   mapping: RenameMap, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename and check `tensors` for `model`; every weight must get exactly one tensor."""
    expected = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in tensors.items():
        target = mapping.target(key)
        if target is None:
            continue
        if target not in expected:
            near = [k for k in expected if k.split(".")[-1] == target.split(".")[-1]][:3]
            hint = f" (similar: {', '.join(near)})" if near else ""
            renamed = f" (renamed to {target!r})" if target != key else ""
            raise WeightsError(f"{source}: tensor {key!r} has no home in the network"
                               f"{renamed}{hint}")
        if target in out:
            raise WeightsError(f"{source}: tensors {origin[target]!r} and {key!r} both map to "
                               f"{target!r}")
        if tuple(tensor.shape) != tuple(expected[target].shape):
            raise WeightsError(f"{source}: tensor {key!r} has shape {tuple(tensor.shape)} but "
                               f"{target!r} in the network has {tuple(expected[target].shape)}")
        out[target] = tensor
        origin[target] = key
    missing = [k for k in expected if k not in out]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise WeightsError(f"{source}: no tensor for {', '.join(missing[:3])}{more} of the "
                           "network; the checkpoint belongs to another network or the map "
                           "misses a rule")
    return out


def load_weights(model: nn.Module, path: str | Path,
                 map_path: str | Path | None = None) -> None:
    """Load a checkpoint into `model`, by name or through a rename map."""
    mapping = load_rename_map(map_path) if map_path else RenameMap()
    try:
        payload = load_checkpoint(path)
    except CheckpointError as exc:
        raise WeightsError(str(exc)) from None
    if not isinstance(payload, Mapping):
        raise WeightsError(f"{path}: not a checkpoint (holds a {type(payload).__name__})")
    state = map_state_dict(model, checkpoint_tensors(payload, mapping, path), mapping,
                           str(path))
    model.load_state_dict(state, strict=True)
