"""Checks on the CDS Hooks response a plugin produced (checklist sections 1 and 6; 3.0 invariants
cds-resp-1..7), and the pruning that keeps null and empty members out of every response (GEN-2..4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

INDICATORS = ("info", "warning", "critical")
_SELECTION = ("at-most-one", "any")
_ACTIONS = ("create", "update", "delete")
_LINK_TYPES = ("absolute", "smart")


_CONTAINERS = (dict, list)
_EMPTIABLE = (str, dict, list)


def prune(value: Any) -> Any:
    """``value`` without ``None``, ``""``, ``[]`` or ``{}`` members, recursively (GEN-2..4).
    ``0`` and ``false`` are values, and stay."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(item, _CONTAINERS):  # scalars need no call: every card has hundreds
                item = prune(item)
            if item is None or (not item and isinstance(item, _EMPTIABLE)):
                continue
            out[key] = item
        return out
    if isinstance(value, list):
        items = (prune(item) if isinstance(item, _CONTAINERS) else item for item in value)
        return [item for item in items if not (item is None or (not item and isinstance(item, _EMPTIABLE)))]
    return value


def _empty_members(value: Any, path: str) -> list[str]:
    problems: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if item is None or item == "" or item == [] or item == {}:
                problems.append(f"{path}.{key} is null or empty (GEN-2..4)")
            problems.extend(_empty_members(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems.extend(_empty_members(item, f"{path}[{index}]"))
    return problems


def _coding_problems(coding: Any, path: str, display_required: bool) -> list[str]:
    if not isinstance(coding, Mapping):
        return [f"{path} must be a Coding object"]
    problems = [f"{path}.{f} is required (GEN-9)" for f in ("system", "code") if not isinstance(coding.get(f), str)]
    if display_required and not isinstance(coding.get("display"), str):
        problems.append(f"{path}.display is required (cds-resp-4)")
    return problems


def card_problems(card: Any, path: str = "card") -> list[str]:
    """Everything in ``card`` that breaks CDS Hooks 2.0.1 card rules; empty when the card conforms."""
    if not isinstance(card, Mapping):
        return [f"{path} must be an object"]
    problems = _empty_members(card, path)
    summary = card.get("summary")
    if not isinstance(summary, str) or not summary:
        problems.append(f"{path}.summary is required")
    elif len(summary) >= 140:
        problems.append(f"{path}.summary has {len(summary)} characters; it must be fewer than 140")
    if card.get("indicator") not in INDICATORS:
        problems.append(f"{path}.indicator must be one of {INDICATORS}")
    if "detail" in card and not isinstance(card["detail"], str):
        problems.append(f"{path}.detail must be a Markdown string")
    source = card.get("source")
    if not isinstance(source, Mapping) or not isinstance(source.get("label"), str):
        problems.append(f"{path}.source.label is required")
    elif "topic" in source:
        problems.extend(_coding_problems(source["topic"], f"{path}.source.topic", False))
    suggestions = card.get("suggestions")
    if suggestions is not None:
        if card.get("selectionBehavior") not in _SELECTION:
            problems.append(f"{path}.selectionBehavior is required with suggestions (cds-resp-6)")
        recommended = 0
        for i, suggestion in enumerate(suggestions if isinstance(suggestions, list) else [None]):
            where = f"{path}.suggestions[{i}]"
            if not isinstance(suggestion, Mapping) or not isinstance(suggestion.get("label"), str):
                problems.append(f"{where}.label is required")
                continue
            recommended += bool(suggestion.get("isRecommended"))
            for j, action in enumerate(suggestion.get("actions") or []):
                problems.extend(action_problems(action, f"{where}.actions[{j}]"))
        if card.get("selectionBehavior") == "at-most-one" and recommended > 1:
            problems.append(f"{path}: at-most-one allows one isRecommended suggestion (cds-resp-1)")
    elif "selectionBehavior" in card:
        problems.append(f"{path}.selectionBehavior without suggestions")
    for i, reason in enumerate(card.get("overrideReasons") or []):
        problems.extend(_coding_problems(reason, f"{path}.overrideReasons[{i}]", True))
    for i, link in enumerate(card.get("links") or []):
        where = f"{path}.links[{i}]"
        if not isinstance(link, Mapping):
            problems.append(f"{where} must be an object")
            continue
        for field in ("label", "url"):
            if not isinstance(link.get(field), str):
                problems.append(f"{where}.{field} is required")
        if link.get("type") not in _LINK_TYPES:
            problems.append(f"{where}.type must be absolute or smart")
        if "appContext" in link and link.get("type") != "smart":
            problems.append(f"{where}.appContext is only for smart links (cds-resp-3)")
    return problems


def action_problems(action: Any, path: str) -> list[str]:
    if not isinstance(action, Mapping):
        return [f"{path} must be an object"]
    problems = []
    kind = action.get("type")
    if kind not in _ACTIONS:
        problems.append(f"{path}.type must be create, update or delete")
    if not isinstance(action.get("description"), str):
        problems.append(f"{path}.description is required (cds-resp-5)")
    if kind in ("create", "update") and not isinstance(action.get("resource"), Mapping):
        problems.append(f"{path}.resource is required for {kind}")
    if kind == "delete" and (not isinstance(action.get("resourceId"), str) or "resource" in action):
        problems.append(f"{path}: delete takes resourceId and no resource (cds-resp-2)")
    return problems


def response_problems(response: Any) -> list[str]:
    """Problems with a whole CDS response (RESP-1, RESP-2)."""
    if not isinstance(response, Mapping) or not isinstance(response.get("cards"), list):
        return ["response must be an object with a cards array (RESP-1)"]
    problems: list[str] = []
    for i, card in enumerate(response["cards"]):
        problems.extend(card_problems(card, f"cards[{i}]"))
    if "systemActions" in response:
        actions = response["systemActions"]
        if not isinstance(actions, list) or not actions:
            problems.append("systemActions must be a non-empty array when present (GEN-4)")
        else:
            for i, action in enumerate(actions):
                problems.extend(action_problems(action, f"systemActions[{i}]"))
    return problems
