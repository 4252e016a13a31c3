"""A YAML document kept with its nodes, so that a problem can name the line it is on."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import yaml

from orch.errors import InvalidInput

_MERGE = "tag:yaml.org,2002:merge"
_FIX = "Check the indentation and quoting on that line and the one above it."


@dataclass(frozen=True)
class YamlSource:
    """The document's root node (None for an empty file) and the values built from it."""

    node: yaml.Node | None
    data: object

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of the deepest key on `path` that exists; the document's first line otherwise."""
        node = self.node
        if node is None:
            return None
        line = node.start_mark.line + 1
        for key in path:
            if isinstance(node, yaml.MappingNode):
                found = next((item for item in node.value if _key_text(item[0]) == str(key)), None)
                if found is None:
                    break
                line, node = found[0].start_mark.line + 1, found[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def duplicate_key(self) -> tuple[list[str], int, int] | None:
        """(path, line, first line) of the earliest key written twice in one mapping, if any.

        YAML loaders keep the last of two equal keys without a word; a user who wrote both meant
        one of them, so we say so instead of guessing.
        """
        found: list[tuple[list[str], int, int]] = []
        for node, path in _walk(self.node):
            if isinstance(node, yaml.MappingNode):
                first: dict[tuple[str, str], int] = {}
                for key, _ in node.value:
                    text = _key_text(key)
                    line = key.start_mark.line + 1
                    if text is not None and key.tag != _MERGE:
                        if (key.tag, text) in first:
                            found.append(([*path, text], line, first[(key.tag, text)]))
                        first.setdefault((key.tag, text), line)
        return min(found, key=lambda f: f[1]) if found else None


def _key_text(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def load_yaml(text: str, filename: str) -> YamlSource:
    """Parse one YAML document with the safe loader; any failure is an InvalidInput naming the line."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters at once, so it can fail too
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        # "expected a single document in the stream, but found another document" needs both halves.
        problem = ", ".join(part for part in (exc.context, exc.problem) if part) or "unreadable"
        raise InvalidInput(f"{filename}{where}: not valid YAML: {problem}.", _FIX) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise InvalidInput(
            f"{filename} line {line}: not valid YAML: character {_codepoint(exc.character)} is not allowed.",
            "Remove control characters from the file; write it as plain UTF-8 text.",
        ) from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{filename}: not valid YAML: {exc}.", _FIX) from None
    except (ValueError, TypeError, OverflowError) as exc:
        # The safe constructors raise these for values that look typed but are not, such as the
        # date 2001-02-30 or an integer of thousands of digits.
        raise InvalidInput(
            f"{filename}: not valid YAML: a value can't be read ({exc}).",
            "Quote values that should stay text, such as dates and long numbers.",
        ) from None
    except RecursionError:
        raise InvalidInput(
            f"{filename}: not valid YAML: it is nested too deeply.", "Flatten the nested lists or mappings."
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    if (found := _surrogate(node)) is not None:
        line, path, char = found
        where = f"{'.'.join(path)}: " if path else ""
        raise InvalidInput(
            f"{filename} line {line}: {where}\\u{ord(char):04x} is half of a UTF-16 surrogate pair, "
            "not a character, and no text can hold it alone.",
            "Write the character itself, or one escape of its code point (\\U0001F600), not its "
            "two UTF-16 halves (\\ud83d\\ude00).",
        )
    return YamlSource(node, data)


_SURROGATES = re.compile("[\\ud800-\\udfff]")


def _shown(text: str) -> str:
    """`text` with its lone surrogates written as their escapes: a message holds none either."""
    return _SURROGATES.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _surrogate(root: yaml.Node | None) -> tuple[int, list[str], str] | None:
    """(line, key path, character) of the first lone surrogate a scalar holds, a key's or a
    value's: a double-quoted `\\ud800` reads as one, which no UTF-8 text (the store, JSON) can
    hold (a 500 at publish, before). Checked here, once for every string of any orch.yaml. The
    nodes are walked in the document's order, so an anchor's value is named where it is written."""
    for node, path in _walk(root):
        if isinstance(node, yaml.ScalarNode) and (char := _SURROGATES.search(node.value)) is not None:
            return node.start_mark.line + 1, [_shown(step) for step in path], char.group()
    return None


def _walk(root: yaml.Node | None) -> Iterator[tuple[yaml.Node, list[str]]]:
    """Every node under `root` once (aliases share nodes, and can make cycles), in the document's
    order, with the path of keys and indexes that leads to it (a key's own node has its key's
    path; a key that is not text is "?")."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, list[str]]] = [(root, [])] if root is not None else []
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node, path
        if isinstance(node, yaml.MappingNode):
            for key, value in reversed(node.value):
                text = _key_text(key)
                step = [*path, text if text is not None else "?"]
                stack.extend(((value, step), (key, step)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, [*path, str(i)]) for i, item in reversed(list(enumerate(node.value))))


def _codepoint(character: object) -> str:
    return f"U+{character:04X}" if isinstance(character, int) else repr(character)
