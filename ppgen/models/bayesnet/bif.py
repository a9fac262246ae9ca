"""Reading and writing discrete Bayesian networks in BIF (Bayesian Interchange Format 0.15).

The grammar is the one of the bnlearn repository, pgmpy and JavaBayes::

    network NAME { property TEXT; ... }
    variable NAME { type discrete [ k ] { s1, s2, ... }; property TEXT; ... }
    probability ( X | P1, P2 ) { (s1, s2) p1, p2, ...; default p1, p2, ...; }
    probability ( X ) { table p1, p2, ...; }

Names are bare words (anything but white space, ``{}()[];,|"`` and comment
starts, so ``0-50``, ``Asy/Patch`` and ``>=7.5`` are names) or double-quoted
strings; commas between states, parents and numbers may be left out (JavaBayes),
and so may the ``|`` (``probability ( X P1 P2 )``: the first name is the child).
``//`` and ``/* */`` comments are skipped. A ``table`` for a node with parents
lists the values child-major: the child's state varies slowest and the last
parent fastest, as in JavaBayes and pgmpy's ``BIFReader``.

``parse_bif(format_bif(net)) == net`` holds exactly: numbers are written with
``repr(float(x))``, the shortest text that reads back to the same float.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ...errors import DatasetError

__all__ = ["BIFError", "BIFNetwork", "parse_bif", "read_bif"]


class BIFError(DatasetError):
    """A BIF text or file that cannot be read or written; the message names the line or node."""


@dataclass(eq=False)
class BIFNetwork:
    """A discrete Bayesian network as written in a BIF file.

    Attributes
    ----------
    name : str
        The network's name.
    variables : dict of str to list of str
        Each variable's state names, variables and states in file order.
    parents : dict of str to list of str
        Each variable's parents, in the order of its ``probability`` header.
    cpts : dict of str to numpy.ndarray
        Each variable's conditional probability table, float64 of shape
        ``(*[len(variables[p]) for p in parents[v]], len(variables[v]))``: one
        axis per parent, then the child's states on the last axis.
    properties : dict of str to list of str
        Each variable's raw ``property`` strings (an empty list when it has none).
    network_properties : list of str
        The raw ``property`` strings of the ``network`` block.
    """

    name: str
    variables: dict[str, list[str]]
    parents: dict[str, list[str]]
    cpts: dict[str, np.ndarray]
    properties: dict[str, list[str]] = field(default_factory=dict)
    network_properties: list[str] = field(default_factory=list)

    def __eq__(self, other):
        """Exact equality: same names and orders, and bit-for-bit equal tables."""
        if not isinstance(other, BIFNetwork):
            return NotImplemented
        return (self.name == other.name and self.network_properties == other.network_properties
                and list(self.variables.items()) == list(other.variables.items())
                and list(self.parents.items()) == list(other.parents.items())
                and self.properties == other.properties and list(self.cpts) == list(other.cpts)
                and all(np.array_equal(self.cpts[v], other.cpts[v]) for v in self.cpts))


# ---------------------------------------------------------------- tokenizer

class _Token(NamedTuple):
    kind: str  # "word", "string", "punct" or "eof"
    text: str
    line: int


_SKIP = re.compile(r"(?:\s+|//[^\n]*|/\*.*?\*/)*", re.S)
_PUNCT = frozenset("{}()[];,|")
WORD = re.compile(r'(?:[^\s{}()\[\];,|"/]|/(?![/*]))+')
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_UNESCAPE = re.compile(r"\\(.)", re.S)
_RAW_PIECE = re.compile(r'[^;"/]+|/(?![/*])|"(?:[^"\\]|\\.)*"|//[^\n]*|/\*.*?\*/', re.S)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_COUNT = re.compile(r"[0-9]+")
_NUMBER_RUN = re.compile(rf"\s*({_NUMBER.pattern}(?:\s*,\s*{_NUMBER.pattern}|\s+{_NUMBER.pattern})*)\s*;")
_SEPARATORS = re.compile(r"[\s,]+")


def _show(token):
    return "end of input" if token.kind == "eof" else repr(token.text if token.kind != "string"
                                                             else f'"{token.text}"')


class Lexer:
    """Splits BIF text into tokens with line numbers, one token of lookahead."""

    def __init__(self, text):
        self.text, self.pos, self.line, self._ahead = text, 0, 1, None

    def _advance(self, end):
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def _lex(self):
        self._advance(_SKIP.match(self.text, self.pos).end())
        text, pos, line = self.text, self.pos, self.line
        if pos == len(text):
            return _Token("eof", "", line)
        if text.startswith("/*", pos):
            raise BIFError(f"line {line}: unterminated /* comment")
        if text[pos] in _PUNCT:
            self._advance(pos + 1)
            return _Token("punct", text[pos], line)
        if text[pos] == '"':
            match = _STRING.match(text, pos)
            if match is None:
                raise BIFError(f"line {line}: unterminated quoted name")
            self._advance(match.end())
            return _Token("string", _UNESCAPE.sub(r"\1", match.group(1)), line)
        match = WORD.match(text, pos)
        self._advance(match.end())
        return _Token("word", match.group(), line)

    def peek(self):
        if self._ahead is None:
            self._ahead = self._lex()
        return self._ahead

    def next(self):
        token, self._ahead = self.peek(), None
        return token

    def number_run(self):
        """Fast path for a plain list of finite numbers ending in ``;`` (eaten), else None."""
        match = _NUMBER_RUN.match(self.text, self.pos) if self._ahead is None else None
        if match is None:
            return None
        values = [float(x) for x in _SEPARATORS.split(match.group(1))]
        if not all(map(math.isfinite, values)):
            return None
        self._advance(match.end())
        return values

    def raw_until_semicolon(self, what):
        """The raw text up to the next ``;`` (consumed), comments dropped, for ``property``."""
        assert self._ahead is None
        line, pieces = self.line, []
        while (match := _RAW_PIECE.match(self.text, self.pos)) is not None:
            piece = match.group()
            pieces.append(" " if piece.startswith(("//", "/*")) else piece)
            self._advance(match.end())
        if not self.text.startswith(";", self.pos):
            raise BIFError(f"line {line}: expected ';' after {what}, got "
                           f"{'end of input' if self.pos == len(self.text) else 'an unterminated quote or comment'}")
        self._advance(self.pos + 1)
        return "".join(pieces).strip()


# ---------------------------------------------------------------- parser

@dataclass
class _Block:
    """One ``probability`` block as written, checked against the variables later."""

    child: str
    parents: list[str]
    line: int
    table: tuple | None = None  # (values, line)
    default: tuple | None = None  # (values, line)
    rows: dict = field(default_factory=dict)  # states tuple -> (values, line)
    properties: list[str] = field(default_factory=list)


class _Parser:
    """Recursive descent over the token stream; collects declarations, then builds the network."""

    def __init__(self, text):
        self.lex = Lexer(text)

    def expect(self, text, after):
        token = self.lex.next()
        if token.kind != "punct" or token.text != text:
            raise BIFError(f"line {token.line}: expected {text!r} {after}, got {_show(token)}")
        return token

    def at(self, text):
        token = self.lex.peek()
        return token.kind in ("punct", "word") and token.text == text

    def name(self, what):
        token = self.lex.next()
        if token.kind not in ("word", "string"):
            raise BIFError(f"line {token.line}: expected {what}, got {_show(token)}")
        return token.text

    def names(self, close, what):
        """Names separated by optional commas, up to (and eating) ``close``."""
        out = []
        while not self.at(close):
            out.append(self.name(what))
            if self.at(","):
                self.lex.next()
                if self.at(close):
                    raise BIFError(f"line {self.lex.peek().line}: expected {what} after ',', got {close!r}")
        self.lex.next()
        return out

    def numbers(self, what):
        """Numbers separated by optional commas, up to (and eating) ``;``."""
        values = self.lex.number_run()
        if values is not None:
            return values
        values, after_comma = [], False
        while True:
            token = self.lex.next()
            if token.kind == "word" and _NUMBER.fullmatch(token.text):
                value = float(token.text)
                if not math.isfinite(value):
                    raise BIFError(f"line {token.line}: non-finite value {token.text!r} in {what}")
                values.append(value)
            elif token.kind == "word" and token.text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
                raise BIFError(f"line {token.line}: non-finite value {token.text!r} in {what}")
            elif not values or after_comma:
                where = "after ',' in" if after_comma else "in"
                raise BIFError(f"line {token.line}: expected a number {where} {what}, got {_show(token)}")
            elif token.kind == "punct" and token.text == ";":
                return values
            else:
                expected = "';'" if token.kind in ("punct", "eof") else "a number or ';'"
                raise BIFError(f"line {token.line}: expected {expected} after the values of {what}, got {_show(token)}")
            after_comma = self.at(",")
            if after_comma:
                self.lex.next()

    def parse(self):
        token = self.lex.next()
        if token.kind != "word" or token.text != "network":
            raise BIFError(f"line {token.line}: expected 'network' at the start, got {_show(token)}")
        name = self.name("the network name")
        self.expect("{", "after the network name")
        network_properties = []
        while not self.at("}"):
            token = self.lex.next()
            if token.text != "property" or token.kind != "word":
                raise BIFError(f"line {token.line}: expected 'property' or '}}' in the network block, "
                               f"got {_show(token)}")
            network_properties.append(self.lex.raw_until_semicolon("the network property"))
        self.lex.next()
        variables, blocks = {}, {}
        while (token := self.lex.next()).kind != "eof":
            if token.kind == "word" and token.text == "variable":
                self.variable(variables, token.line)
            elif token.kind == "word" and token.text == "probability":
                block = self.probability(token.line)
                if block.child in blocks:
                    raise BIFError(f"line {token.line}: second probability block for {block.child!r} "
                                   f"(first on line {blocks[block.child].line})")
                blocks[block.child] = block
            elif token.kind == "word" and token.text == "network":
                raise BIFError(f"line {token.line}: a second 'network' block")
            else:
                raise BIFError(f"line {token.line}: expected 'variable' or 'probability', got {_show(token)}")
        return _build(name, network_properties, variables, blocks)

    def variable(self, variables, line):
        name = self.name("a variable name after 'variable'")
        if name in variables:
            raise BIFError(f"line {line}: duplicate variable {name!r} (first declared on line {variables[name][2]})")
        self.expect("{", f"after 'variable {name}'")
        states, properties = None, []
        while not self.at("}"):
            token = self.lex.next()
            if token.kind == "word" and token.text == "property":
                properties.append(self.lex.raw_until_semicolon(f"the property of {name!r}"))
            elif token.kind == "word" and token.text == "type" and states is None:
                states = self.variable_type(name)
            else:
                what = "'property' or '}'" if states is not None else "'type' or 'property'"
                raise BIFError(f"line {token.line}: expected {what} in variable {name!r}, got {_show(token)}")
        self.lex.next()
        if states is None:
            raise BIFError(f"line {line}: variable {name!r} has no 'type discrete [ k ] {{ ... }};'")
        variables[name] = (states, properties, line)

    def variable_type(self, name):
        token = self.lex.next()
        if token.kind != "word" or token.text != "discrete":
            raise BIFError(f"line {token.line}: variable {name!r}: expected 'discrete', got {_show(token)}"
                           " (only discrete variables are supported)")
        self.expect("[", "after 'discrete'")
        count = self.lex.next()
        if count.kind != "word" or not _COUNT.fullmatch(count.text):
            raise BIFError(f"line {count.line}: expected the number of states of {name!r}, got {_show(count)}")
        self.expect("]", "after the number of states")
        line = self.expect("{", "before the states").line
        states = self.names("}", f"a state name of {name!r}")
        self.expect(";", f"after the states of {name!r}")
        if len(states) != int(count.text):
            raise BIFError(f"line {count.line}: variable {name!r} declares [ {count.text} ] states "
                           f"but lists {len(states)}")
        if not states:
            raise BIFError(f"line {line}: variable {name!r} has no states")
        for i, state in enumerate(states):
            if state in states[:i]:
                raise BIFError(f"line {line}: duplicate state {state!r} in variable {name!r}")
        return states

    def probability(self, line):
        self.expect("(", "after 'probability'")
        child = self.name("a variable name after 'probability ('")
        if self.at("|"):
            self.lex.next()
            parents = self.names(")", f"a parent name of {child!r}")
            if not parents:
                raise BIFError(f"line {line}: expected parent names after '|' in the block of {child!r}")
        else:
            if self.at(","):
                self.lex.next()
            parents = self.names(")", f"a parent name of {child!r}")
        block = _Block(child, parents, line)
        self.expect("{", f"after 'probability ( {child} ... )'")
        while not self.at("}"):
            token = self.lex.next()
            if token.kind == "word" and token.text == "property":
                block.properties.append(self.lex.raw_until_semicolon(f"the property of {child!r}"))
                continue
            if token.kind == "word" and token.text in ("table", "default"):
                entry, states = token.text, None
                values = self.numbers(f"the {'table' if entry == 'table' else 'default row'} of {child!r}")
            elif token.kind == "punct" and token.text == "(":
                states = tuple(self.names(")", f"a parent state in a row of {child!r}"))
                entry = f"the row ({', '.join(states)})"
                values = self.numbers(f"{entry} of {child!r}")
            else:
                raise BIFError(f"line {token.line}: expected 'table', 'default', a '(' row, 'property' "
                               f"or '}}' in the probability block of {child!r}, got {_show(token)}")
            if block.table or (entry == "table" and (block.rows or block.default)) \
                    or (entry == "default" and block.default) or states in block.rows:
                raise BIFError(f"line {token.line}: {entry} of {child!r} repeats or mixes with a 'table'")
            if states is None:
                setattr(block, entry, (values, token.line))
            else:
                block.rows[states] = (values, token.line)
        self.lex.next()
        return block


def _build(name, network_properties, declared, blocks):
    """Check the blocks against the declared variables and assemble the tables."""
    variables = {v: states for v, (states, _, _) in declared.items()}
    properties = {v: list(props) for v, (_, props, _) in declared.items()}
    for child, block in blocks.items():
        if child not in variables:
            raise BIFError(f"line {block.line}: probability block for undeclared variable {child!r}")
        for i, parent in enumerate(block.parents):
            if parent not in variables:
                raise BIFError(f"line {block.line}: parent {parent!r} of {child!r} is not declared")
            if parent == child or parent in block.parents[:i]:
                raise BIFError(f"line {block.line}: {child!r} lists {parent!r} as a parent "
                               f"{'of itself' if parent == child else 'twice'}")
    parents, cpts = {}, {}
    for child, (_, _, line) in declared.items():
        if child not in blocks:
            raise BIFError(f"line {line}: variable {child!r} has no probability block")
        block = blocks[child]
        parents[child] = list(block.parents)
        cpts[child] = _table(block, variables)
        properties[child].extend(block.properties)
    return BIFNetwork(name, variables, parents, cpts, properties, network_properties)


def _table(block, variables):
    """The CPT of one block, shape ``(*parent cards, child card)``."""
    child, k = block.child, len(variables[block.child])
    cards = [len(variables[p]) for p in block.parents]
    size = k * math.prod(cards)
    if block.table is not None:
        values, line = block.table
        if len(values) != size:
            raise BIFError(f"line {line}: the table of {child!r} has {len(values)} values, expected {size} "
                           f"({k} states x {math.prod(cards)} parent configurations)")
        return np.moveaxis(np.array(values, dtype=np.float64).reshape(k, *cards), 0, -1).copy()
    cpt, filled = np.zeros((*cards, k)), np.zeros(cards, dtype=bool)
    index = [{s: i for i, s in enumerate(variables[p])} for p in block.parents]
    for states, (values, line) in block.rows.items():
        if len(states) != len(cards):
            raise BIFError(f"line {line}: row ({', '.join(states)}) of {child!r} names {len(states)} parent "
                           f"states, expected {len(cards)} ({', '.join(block.parents) or 'no parents'})")
        for state, parent, lookup in zip(states, block.parents, index):
            if state not in lookup:
                raise BIFError(f"line {line}: row of {child!r} has unknown state {state!r} of parent {parent!r}")
        if len(values) != k:
            raise BIFError(f"line {line}: row ({', '.join(states)}) of {child!r} has {len(values)} values, "
                           f"expected {k} (one per state)")
        position = tuple(lookup[s] for s, lookup in zip(states, index))
        cpt[position], filled[position] = values, True
    if block.default is not None:
        values, line = block.default
        if len(values) != k:
            raise BIFError(f"line {line}: the default row of {child!r} has {len(values)} values, expected {k}")
        cpt[~filled] = values
    elif not filled.all():
        missing = tuple(int(i) for i in np.argwhere(~filled)[0])
        config = ", ".join(f"{p}={variables[p][i]}" for p, i in zip(block.parents, missing))
        raise BIFError(f"line {block.line}: the probability block of {child!r} has no row for "
                       f"({config}) and no default" if cards else
                       f"line {block.line}: the probability block of {child!r} has no table")
    return cpt


def parse_bif(text: str) -> BIFNetwork:
    """Parse BIF text into a :class:`BIFNetwork`.

    Parameters
    ----------
    text : str
        The content of a BIF file.

    Returns
    -------
    BIFNetwork

    Raises
    ------
    BIFError
        Malformed text (the message gives the line and what was expected), or
        a network that does not hold together: a probability block or a parent
        for an undeclared variable, duplicate variables or states, unknown or
        missing parent configurations, rows or tables of the wrong length, a
        state count ``[ k ]`` that does not match the states, non-finite numbers.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_bif expects a str, got {type(text).__name__}")
    return _Parser(text).parse()


#: The most bytes of BIF text :func:`read_bif` takes, after decompression (the largest
#: networks of the bnlearn repository are a few MB of text).
MAX_BIF_BYTES = 256 * 2**20


def read_bif(path, max_bytes: int = MAX_BIF_BYTES) -> BIFNetwork:
    """Read a ``.bif`` or gzip-compressed ``.bif.gz`` file (told apart by its first bytes).

    The text (decompressed as it streams) may be at most ``max_bytes`` long, so a small
    compressed file that unpacks to gigabytes is refused before it fills memory.

    Raises
    ------
    BIFError
        The file is missing, unreadable, too large, not UTF-8 text, or not valid BIF;
        the message starts with the path.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            handle = gzip.GzipFile(fileobj=raw) if compressed else raw
            data = handle.read(max_bytes + 1)
        too_large = len(data) > max_bytes
        text = "" if too_large else data.decode("utf-8-sig")
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # ValueError: UnicodeDecodeError
        raise BIFError(f"{path}: cannot be read as a BIF file ({exc})") from None
    if too_large:
        raise BIFError(f"{path}: more than {max_bytes:,} bytes of BIF text{' once decompressed' * compressed}; "
                       "refused (read_bif(max_bytes=...) raises the limit)")
    try:
        return parse_bif(text)
    except BIFError as exc:
        raise BIFError(f"{path}: {exc}") from None

