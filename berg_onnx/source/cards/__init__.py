"""Model cards: what ``BERG.describe`` and ``BERG.get_model_catalog`` report, as data.

Each model family has one ``<model_id>.json`` beside this module, shipped in the wheel
(nothing is fetched). A card holds the fields of BERG's model card: ``model_id``,
``modality``, ``training_dataset``, ``creator``, ``description``, ``input``, ``output``,
``parameters`` (each with ``type``, ``required``, ``valid_values``, ``example``,
``function``, ...), ``performance`` and ``references``. A card describes the model
family (every subject and ROI), not what one export holds (``berg-onnx list`` says that).
"""

from __future__ import annotations

import copy
import json
import textwrap
from functools import cache
from typing import Any

from berg_onnx.errors import ModelLoadError, ModelNotFoundError

# the top-level entries of describe()'s dict, and model_info's, as BERG returns them
DESCRIBE_KEYS = (
    "model_id",
    "model_info",
    "description",
    "input",
    "output",
    "parameters",
    "parameters_by_function",
    "performance",
    "example_usage",
)
MODEL_INFO_KEYS = ("modality", "training_dataset", "model_architecture", "creator")
_REQUIRED = ("model_id", "modality", "training_dataset", "description", "input", "output")
_RULE = "=" * 80
_WIDTH = 80


def card_ids() -> list[str]:
    """The model ids that have a card, sorted."""
    from importlib import resources  # not at import: ~3 ms of every cold start

    files = resources.files(__name__).iterdir()
    return sorted(f.name[: -len(".json")] for f in files if f.name.endswith(".json"))


@cache
def _load(model_id: str) -> dict[str, Any]:
    if model_id not in card_ids():
        raise ModelNotFoundError(
            f"Model {model_id!r} has no model card; cards exist for: {', '.join(card_ids())}."
        )
    from importlib import resources

    path = resources.files(__name__).joinpath(f"{model_id}.json")
    try:
        card = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"the model card {model_id}.json cannot be read: {e}") from e
    missing = [k for k in _REQUIRED if k not in card]
    if not isinstance(card, dict) or missing or card["model_id"] != model_id:
        raise ModelLoadError(
            f"the model card {model_id}.json is malformed: it needs model_id == {model_id!r} "
            f"and the fields {', '.join(_REQUIRED)} (missing: {', '.join(missing) or 'none'})."
        )
    return card


def load_card(model_id: str) -> dict[str, Any]:
    """The card of ``model_id`` as a new dict (changing it changes no later answer)."""
    return copy.deepcopy(_load(model_id))


def parameters_by_function(parameters: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The card's parameters grouped by the function that takes them ("other" if none)."""
    grouped: dict[str, dict[str, Any]] = {}
    for name, info in parameters.items():
        grouped.setdefault(info.get("function", "other"), {})[name] = info
    return grouped


def _example_value(info: dict[str, Any]) -> Any:
    if "example" in info:
        return info["example"]
    if info.get("valid_values"):
        return info["valid_values"][0]
    return info.get("default", "...")


def example_usage(card: dict[str, Any]) -> str:
    """Python that loads the card's model with its example parameters and encodes images."""
    init = parameters_by_function(card.get("parameters", {})).get("get_encoding_model", {})
    args = []
    for name, info in init.items():
        if "properties" in info:  # a dict parameter (selection): one example per key
            value: Any = {k: _example_value(v) for k, v in info["properties"].items()}
        else:
            value = _example_value(info)
        args.append(f"{name}={value!r}")
    call = ", ".join([repr(card["model_id"])] + args)
    return "\n".join(
        [
            "from berg_onnx import BERG",
            "",
            'berg = BERG("path/to/export_dir")  # or BERG() for the Hub export',
            "",
            "# Load the model",
            f"model = berg.get_encoding_model({call})",
            "",
            "# Encode images: stimulus is an (N, 3, H, W) integer array with values 0-255",
            "responses = berg.encode(model, stimulus)",
        ]
    )


def describe_card(card: dict[str, Any]) -> dict[str, Any]:
    """BERG's describe() dict for a card: same keys, same structured values."""
    parameters = card.get("parameters", {})
    return copy.deepcopy(
        {
            "model_id": card["model_id"],
            "model_info": {k: card.get(k) for k in MODEL_INFO_KEYS},
            "description": card.get("description", ""),
            "input": card.get("input", {}),
            "output": card.get("output", {}),
            "parameters": parameters,
            "parameters_by_function": parameters_by_function(parameters),
            "performance": card.get("performance", {}),
            "example_usage": example_usage(card),
        }
    )


def describe(model_id: str) -> dict[str, Any]:
    """Print the card of ``model_id`` and return its describe() dict (BERG.describe)."""
    card = load_card(model_id)
    print(render_card(card))
    return describe_card(card)


def _fill(text: str, indent: str = "", hanging: str | None = None) -> list[str]:
    """Wrapped lines of ``text``, paragraph by paragraph; list items keep their lines."""
    out: list[str] = []
    for para in text.strip("\n").split("\n\n"):
        lines = para.splitlines()
        if all(ln.lstrip().startswith("- ") for ln in lines if ln.strip()):
            out.extend(indent + ln.rstrip() for ln in lines)
        else:
            out.extend(
                textwrap.wrap(
                    " ".join(ln.strip() for ln in lines),
                    _WIDTH,
                    initial_indent=indent,
                    subsequent_indent=indent if hanging is None else hanging,
                )
            )
        out.append("")
    return out[:-1]


def _values(valid: Any) -> str:
    return ", ".join(map(str, valid)) if isinstance(valid, list) else str(valid)


def _parameter_lines(name: str, info: dict[str, Any]) -> list[str]:
    required = info.get("required", True)
    if required:
        how = "required"
    elif "default" in info:
        how = f"optional, default={info['default']!r}"
    else:
        how = "optional"
    lines = ["", f"• {name} ({info.get('type', 'unknown')}, {how})"]
    if info.get("description"):
        lines += _fill(info["description"], "  ↳ ", "    ")
    if info.get("valid_values"):
        lines += _fill(f"Valid values: {_values(info['valid_values'])}", "  ↳ ", "    ")
    if "properties" in info:
        lines += ["", f"  ↪ Sub-parameters within '{name}':"]
        for sub, subinfo in info["properties"].items():
            lines += ["", f"    • {sub} ({subinfo.get('type', 'unknown')})"]
            if subinfo.get("description"):
                lines += _fill(subinfo["description"], "      ↳ ", "        ")
            if subinfo.get("valid_values"):
                valid = f"Valid values: {_values(subinfo['valid_values'])}"
                lines += _fill(valid, "      ↳ ", "        ")
            lines.append(f"      ↳ Example: {subinfo.get('example', '...')}")
    elif "example" in info:
        lines.append(f"  ↳ Example: {info['example']}")
    return lines


def render_card(card: dict[str, Any]) -> str:
    """The card as describe() prints it: BERG's sections, in BERG's order."""
    lines = [_RULE, f"🧠 Model: {card['model_id']}", _RULE, ""]
    for key in MODEL_INFO_KEYS:
        if card.get(key) is not None:
            lines.append(f"{key.replace('_', ' ').capitalize()}: {card[key]}")
    lines += ["", "📋 Description:", *_fill(card.get("description", ""))]
    for key, title in (("input", "📥 Input:"), ("output", "📤 Output:")):
        info = card.get(key)
        if not info:
            continue
        lines += ["", title]
        lines.append(f"  Type: {info.get('type', 'Not specified')}")
        lines.append(f"  Shape: {info.get('shape', 'Not specified')}")
        if info.get("description"):
            lines += _fill(f"Description: {info['description']}", "  ", "  ")
        if info.get("constraints"):
            lines.append("  Constraints:")
            lines += [f"    • {c}" for c in info["constraints"]]
        if info.get("dimensions"):
            lines.append("  Dimensions:")
            lines += [f"    • {d['name']}: {d['description']}" for d in info["dimensions"]]
    for function, params in sorted(parameters_by_function(card.get("parameters", {})).items()):
        title = "Other Parameters" if function == "other" else f"Parameters for {function}()"
        lines += ["", f"📌 {title}:"]
        for name, info in params.items():
            lines += _parameter_lines(name, info)
    perf = card.get("performance") or {}
    if perf:
        lines += ["", "📊 Performance:"]
        for metric in perf.get("metrics", []):
            lines.append(f"  • {metric['name']}: {metric['value']}")
        if perf.get("accuracy_plots"):
            lines += ["", f"  Performance plots at: {perf['accuracy_plots'][0]}"]
    if card.get("references"):
        lines += ["", "📚 References:"]
        for ref in card["references"]:
            lines += _fill(str(ref), "    • ", "      ")
    lines += ["", "📦 Example Usage:", "", example_usage(card), "", _RULE]
    return "\n".join(lines)


def catalog_by_modality(cards: list[dict[str, Any]]) -> dict[str, list[str]]:
    """BERG's get_model_catalog(): modality -> sorted training-dataset names."""
    found: dict[str, set[str]] = {}
    for card in cards:
        found.setdefault(card["modality"], set()).add(card["training_dataset"])
    return {modality: sorted(datasets) for modality, datasets in found.items()}


def render_catalog(catalog: dict[str, list[str]]) -> str:
    """The catalogue as get_model_catalog(print_format=True) prints it."""
    title = "Available Modalities and Datasets:"
    lines = [title, "=" * (len(title) - 1)]
    for modality, datasets in sorted(catalog.items()):
        lines.append(f"• {modality.upper()}")
        lines += [f"  └─ {d}" for d in datasets]
        lines.append("")
    return "\n".join(lines)
