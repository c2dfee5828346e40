"""Shared base for parameter sections: unknown keys are errors, assignment is validated."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    #: reference shots the pipeline cannot run without (``profile validate`` checks it); 0 = zero-shot works
    min_reference_shots: ClassVar[int] = 0
