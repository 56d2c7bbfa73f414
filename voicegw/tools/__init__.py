"""Function-calling tools declared in agent YAML: schema, runner, handlers, routing.

Integrators' Python handlers raise `ToolError("message for the model")` for expected failures.
"""
from voicegw.tools.base import ToolError

__all__ = ["ToolError"]
