"""Latent vector arithmetic: a parser of linear expressions over named operands (no eval)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch


class ExpressionError(ValueError):
    """A latent arithmetic expression that cannot be parsed or is not a vector."""


_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)|(?P<op>[-+*/()]))"
)


@dataclass
class _Linear:
    """A linear combination of named vectors plus a scalar constant (scalars have no terms)."""

    terms: dict[str, float]
    constant: float = 0.0

    def scaled(self, factor: float) -> _Linear:
        return _Linear({k: v * factor for k, v in self.terms.items()}, self.constant * factor)


def _tokens(expr: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None or match.end() == pos:
            if expr[pos:].strip() == "":
                break
            raise ExpressionError(f"expr={expr!r}: unexpected character {expr[pos:].strip()[0]!r} at {pos}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind), match.start(kind)))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent over + - * / ( ) with numbers and operand names; no eval."""

    MAX_DEPTH = 64  # nested parentheses and signs; far past any real expression, well inside Python's stack

    def __init__(self, expr: str) -> None:
        self.expr, self.tokens, self.i, self.depth = expr, _tokens(expr), 0, 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def fail(self, message: str) -> ExpressionError:
        token = self.peek()
        where = f"at position {token[2]}" if token else "at the end"
        return ExpressionError(f"expr={self.expr!r}: {message} {where}")

    def parse(self) -> _Linear:
        value = self.sum()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r}")
        return value

    def sum(self) -> _Linear:
        value = self.product()
        while (token := self.peek()) and token[1] in "+-":
            self.i += 1
            right = self.product().scaled(1.0 if token[1] == "+" else -1.0)
            if bool(value.terms) != bool(right.terms):
                raise ExpressionError(f"expr={self.expr!r}: cannot add a number to a latent vector "
                                      f"(at position {token[2]}); scale vectors with * instead")
            terms = dict(value.terms)
            for name, coefficient in right.terms.items():
                terms[name] = terms.get(name, 0.0) + coefficient
            value = _Linear(terms, value.constant + right.constant)
        return value

    def product(self) -> _Linear:
        value = self.factor()
        while (token := self.peek()) and token[1] in "*/":
            self.i += 1
            right = self.factor()
            if token[1] == "/":
                if right.terms or right.constant == 0:
                    raise ExpressionError(
                        f"expr={self.expr!r}: divide only by a non-zero number (position {token[2]})")
                value = value.scaled(1.0 / right.constant)
            elif value.terms and right.terms:
                raise ExpressionError(
                    f"expr={self.expr!r}: cannot multiply two latent vectors (position {token[2]})")
            else:
                value = right.scaled(value.constant) if right.terms else value.scaled(right.constant)
        return value

    def factor(self) -> _Linear:
        token = self.peek()
        if token is None:
            raise self.fail("expected a number, an operand or '('")
        kind, text, _ = token
        if kind == "number":
            self.i += 1
            return _Linear({}, float(text))
        if kind == "name":
            self.i += 1
            return _Linear({text: 1.0})
        if text not in "+-(":
            raise self.fail(f"unexpected {text!r}")
        if self.depth >= self.MAX_DEPTH:
            raise self.fail(f"nesting deeper than {self.MAX_DEPTH} parentheses or signs")
        self.i += 1
        self.depth += 1
        try:
            if text in "+-":
                return self.factor().scaled(1.0 if text == "+" else -1.0)
            value = self.sum()
            if (close := self.peek()) is None or close[1] != ")":
                raise self.fail("expected ')'")
            self.i += 1
            return value
        finally:
            self.depth -= 1


def parse_expression(expr: str) -> dict[str, float]:
    """Coefficients of the operands in a linear expression like ``"a - b + 0.5 * c"`` (no eval)."""
    value = _Parser(expr).parse()
    if not value.terms:
        raise ExpressionError(f"expr={expr!r} is a number, not a latent vector: name at least one operand")
    return value.terms


def combine(coefficients: dict[str, float], operands: dict[str, torch.Tensor]) -> torch.Tensor:
    """The linear combination sum(coefficient * operand) of latent vectors."""
    missing = sorted(set(coefficients) - set(operands))
    if missing:
        raise ExpressionError(f"the expression names {missing} but only {sorted(operands)} are given")
    return sum(c * operands[name] for name, c in coefficients.items())
