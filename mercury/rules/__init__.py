"""Rules: mercure's rule expressions, the study series expression, and which rules fire.

Pure functions over tag values; nothing here reads configuration, files or the clock
(except the evaluation deadline), so the router and the configuration check share it.
"""

from mercury.rules.errors import RuleSyntaxError
from mercury.rules.expression import CompiledRule, RuleOutcome, compile_rule
from mercury.rules.selection import RuleSpec, Selection, select_rules
from mercury.rules.series_expression import SeriesExpression, compile_series_expression

__all__ = [
    "CompiledRule",
    "RuleOutcome",
    "RuleSpec",
    "RuleSyntaxError",
    "Selection",
    "SeriesExpression",
    "compile_rule",
    "compile_series_expression",
    "select_rules",
]
