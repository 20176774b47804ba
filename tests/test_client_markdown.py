"""The client's Markdown renderable is Rich's, parsed by one shared parser: it must render a
message exactly as Rich's own Markdown does."""

from __future__ import annotations

from rich.console import Console
from rich.markdown import Markdown

from agent_template.frontend.widgets.text import rich_markdown

SAMPLE = """# Title

Some *emphasis*, **strong**, ~~struck~~ and `code`.

| a | b |
|---|---|
| 1 | 2 |

```python
def f(x):
    return x * 2
```

- one
- two
"""


def render(renderable: object) -> str:
    console = Console(width=60, record=True, color_system="truecolor", force_terminal=True)
    console.print(renderable)
    return console.export_text(styles=True)


def test_shared_parser_renders_as_rich_does() -> None:
    ours = rich_markdown(SAMPLE)
    theirs = Markdown(SAMPLE, code_theme="monokai", hyperlinks=False)
    assert render(ours) == render(theirs)
    assert "Title" in render(ours)


def test_documents_do_not_share_state() -> None:
    first, second = rich_markdown("one"), rich_markdown("two")
    assert "one" in render(first) and "two" in render(second)
    assert "two" not in render(first)
