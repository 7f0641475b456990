"""A form's fields checked by the REST route's own body model: one rule for both doors, its
refusals worded as the API's 422 words them."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from orchestrator.domain.errors import InvalidInput

__all__ = ["checked"]

Body = TypeVar("Body", bound=BaseModel)


def checked(model: type[Body], body: dict[str, Any]) -> Body:
    """``body`` through ``model``; :class:`InvalidInput` with each reason (``path: message``)
    in its message and its details when the model refuses it."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        reasons = [
            f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors()
        ]
        raise InvalidInput("; ".join(reasons), details=reasons) from None
