"""Shared base for parameter sections: unknown keys are errors, assignment is validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
