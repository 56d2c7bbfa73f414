"""Client errors the local model reports the way the real service does.

Every problem with a client event becomes one `error` server event
{type:"error", event_id, error:{type:"invalid_request_error", code, message, param, event_id}}
and the session carries on. Messages follow the real service's wording where it is known.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ClientError(Exception):
    code: str
    message: str
    param: str | None = None
    type: str = "invalid_request_error"

    def __str__(self) -> str:
        return self.message


def missing(param: str) -> ClientError:
    return ClientError("missing_required_parameter", f"Missing required parameter: '{param}'.", param)


def unknown_parameter(param: str) -> ClientError:
    return ClientError("unknown_parameter", f"Unknown parameter: '{param}'.", param)


def invalid_type(param: str, expected: str, got: object) -> ClientError:
    return ClientError(
        "invalid_type",
        f"Invalid type for '{param}': expected {expected}, but got {type(got).__name__} instead.",
        param,
    )


def invalid_value(param: str, value: object, supported: tuple[str, ...] | list[str]) -> ClientError:
    listed = ", ".join(f"'{s}'" for s in supported[:-1])
    listed = f"{listed}, and '{supported[-1]}'" if len(supported) > 1 else f"'{supported[0]}'"
    return ClientError("invalid_value", f"Invalid value: '{value}'. Supported values are: {listed}.", param)


def below_min(param: str, minimum: float, got: float) -> ClientError:
    return ClientError(
        "decimal_below_min_value" if isinstance(got, float) else "integer_below_min_value",
        f"Invalid '{param}': value below minimum. Expected a value >= {minimum}, but got {got} instead.",
        param,
    )


def above_max(param: str, maximum: float, got: float) -> ClientError:
    return ClientError(
        "decimal_above_max_value" if isinstance(got, float) else "integer_above_max_value",
        f"Invalid '{param}': value above maximum. Expected a value <= {maximum}, but got {got} instead.",
        param,
    )


def item_not_found(action: str, item_id: str, param: str = "item_id") -> ClientError:
    return ClientError(
        "item_not_found" if action != "truncating" else "item_truncate_invalid_item_id",
        f"Error {action} item: the item with id '{item_id}' does not exist.",
        param,
    )
