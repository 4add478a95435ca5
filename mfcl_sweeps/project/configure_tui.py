"""The terminal screen of `mfcl-sweeps configure` (prompt_toolkit, full screen, keyboard only,
so it works in any terminal and over SSH). All sweep logic is in `configure_model.Builder`;
this module maps keys to its methods and draws its state.

    left: config groups and leaf keys with current values (picked ones marked G=grid, P=paired)
    right: live run count, the sweep file as it would be saved, the first runs
    bottom: messages, the input line, the key help
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from mfcl_sweeps.project.configure_model import Builder, Preview, ValueSyntaxError

HELP = ("up/down or j/k: move  /: find  enter: values  d: drop  p: grid<->paired  s: seeds  b: budget  "
        "x: exclude  X: clear excludes  m: max_runs  w: save  q: quit")
VALUES_HINT = "values: a,b,c | range(1,5) | log(1e-4,1e-1,4) | * (all options of a group) | empty: drop"


class ConfigureScreen:
    def __init__(self, builder: Builder, app: str, out: Path, force: bool = False) -> None:
        self.builder, self.app, self.out, self.force = builder, app, out, force
        self.keys = builder.keys()
        self.selected = 0
        self.message = f"{len(self.keys)} keys; {VALUES_HINT}"
        self.prompt = ""
        self.on_input: Optional[Callable[[str], None]] = None
        self.preview: Preview = builder.preview(app)
        self.saved: Optional[Path] = None
        self.confirm_overwrite = False

    # -- actions ------------------------------------------------------------------------------
    def key(self) -> str:
        return self.keys[self.selected][0]

    def move(self, delta: int) -> None:
        self.selected = max(0, min(len(self.keys) - 1, self.selected + delta))

    def find(self, text: str) -> None:
        text = text.strip()
        hits = [i for i, (k, _) in enumerate(self.keys) if k == text] or \
            [i for i, (k, _) in enumerate(self.keys) if text in k]
        if not hits:
            raise ValueSyntaxError(f"no key contains {text!r}")
        self.selected = hits[0]

    def ask(self, prompt: str, action: Callable[[str], None]) -> None:
        self.prompt, self.on_input = prompt, action

    def submit(self, text: str) -> None:
        action, self.on_input, self.prompt = self.on_input, None, ""
        try:
            action(text)
            self.message = ""
        except ValueSyntaxError as err:
            self.message = f"error: {err}"
        self.refresh()

    def refresh(self) -> None:
        self.preview = self.builder.preview(self.app)
        self.confirm_overwrite = False

    def save(self) -> None:
        if self.preview.count is None:
            self.message = f"not saved: {self.preview.error}"
            return
        if self.out.exists() and not (self.force or self.confirm_overwrite):
            self.confirm_overwrite = True
            self.message = f"{self.out} exists: press w again to overwrite it"
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(self.builder.text(self.app))
        self.saved, self.confirm_overwrite = self.out, False
        self.message = f"saved {self.out} ({self.preview.count} run(s)): mfcl-sweeps count {self.out}"

    # -- drawing ------------------------------------------------------------------------------
    def key_lines(self) -> list[tuple[str, str]]:
        lines = []
        for i, (key, current) in enumerate(self.keys):
            param = self.builder.params.get(key)
            mark = ("P" if param.paired else "G") if param else " "
            kind = "[group] " if key in self.builder.groups else ""
            picked = f"  -> {param.text}" if param else ""
            style = "reverse" if i == self.selected else ("bold" if param else "")
            lines.append((style, f"{'>' if i == self.selected else ' '}{mark} {kind}{key} = {current}{picked}\n"))
        return lines

    def preview_lines(self) -> str:
        p = self.preview
        head = f"count: {p.count} run(s)" if p.count is not None else f"count: ? ({p.error})"
        extra = [f"seeds: {self.builder.seeds}" if self.builder.seeds is not None else "",
                 f"excludes: {len(self.builder.exclude)}" if self.builder.exclude else ""]
        runs = [f"  {i}: {r}" for i, r in enumerate(p.runs)]
        return "\n".join([head, *[e for e in extra if e], "", f"--- {self.out} ---",
                          self.builder.text(self.app).rstrip(), "", "--- first runs ---", *runs])


def run_screen(screen: ConfigureScreen) -> Optional[Path]:
    """Show the screen until the user quits; the path saved last, if any."""
    from prompt_toolkit import Application
    from prompt_toolkit.buffer import Buffer
    from prompt_toolkit.data_structures import Point
    from prompt_toolkit.filters import Condition
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.layout import ConditionalContainer, HSplit, Layout, VSplit, Window, WindowAlign
    from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl

    editing = Condition(lambda: screen.on_input is not None)
    browsing = ~editing
    entry = Buffer(multiline=False)
    keys = KeyBindings()

    def ask(prompt: str, action: Callable[[str], None], initial: str = "") -> None:
        screen.ask(prompt, action)
        entry.set_document(entry.document.__class__(initial, len(initial)), bypass_readonly=True)
        app.layout.focus(entry_window)

    def done_editing(text: Optional[str]) -> None:
        if text is None:
            screen.on_input, screen.prompt = None, ""
        else:
            screen.submit(text)
        app.layout.focus(list_window)

    for names, delta in (((("up",), ("k",)), -1), ((("down",), ("j",)), 1),
                         ((("pageup",),), -20), ((("pagedown",),), 20)):
        for name in names:
            keys.add(*name, filter=browsing)(lambda e, d=delta: screen.move(d))

    @keys.add("enter", filter=browsing)
    def _(event) -> None:
        key = screen.key()
        param = screen.builder.params.get(key)
        ask(f"{key} values: ", lambda t: screen.builder.set_values(key, t), param.text if param else "")

    @keys.add("/", filter=browsing)
    def _(event) -> None:
        ask("find key: ", screen.find)

    @keys.add("d", filter=browsing)
    def _(event) -> None:
        screen.builder.set_values(screen.key(), "")
        screen.refresh()

    @keys.add("p", filter=browsing)
    def _(event) -> None:
        screen.builder.toggle_paired(screen.key())
        screen.refresh()

    b = screen.builder
    for letter, prompt, action in (("s", "seeds (N or a,b): ", b.set_seeds),
                                   ("b", "budget (MODE LIMIT, e.g. iso_time 2.5; empty: none): ", b.set_budget),
                                   ("x", "exclude (key=value ...): ", b.add_exclude),
                                   ("m", "max_runs (empty: all): ", b.set_max_runs)):
        keys.add(letter, filter=browsing)(lambda e, p=prompt, a=action: ask(p, a))

    @keys.add("X", filter=browsing)
    def _(event) -> None:
        b.exclude.clear()
        screen.refresh()

    @keys.add("w", filter=browsing)
    def _(event) -> None:
        screen.save()

    @keys.add("q", filter=browsing)
    @keys.add("c-c")
    @keys.add("c-d", filter=browsing)
    def _(event) -> None:
        event.app.exit()

    @keys.add("enter", filter=editing)
    def _(event) -> None:
        done_editing(entry.text)

    @keys.add("escape", filter=editing, eager=True)
    def _(event) -> None:
        done_editing(None)

    list_window = Window(FormattedTextControl(screen.key_lines, focusable=True,
                                              get_cursor_position=lambda: Point(0, screen.selected)))
    entry_window = Window(BufferControl(entry), height=1,
                          get_line_prefix=lambda line, wrap: [("bold", screen.prompt)])
    body = HSplit([
        Window(FormattedTextControl(lambda: [("reverse", f" mfcl-sweeps configure  {screen.app}  ->  {screen.out} ")]),
               height=1),
        VSplit([list_window, Window(width=1, char="|"),
                Window(FormattedTextControl(screen.preview_lines), wrap_lines=True)]),
        Window(FormattedTextControl(lambda: screen.message), height=1, wrap_lines=False),
        ConditionalContainer(entry_window, filter=editing),
        Window(FormattedTextControl(HELP), height=2, wrap_lines=True, align=WindowAlign.LEFT),
    ])
    app = Application(layout=Layout(body, focused_element=list_window), key_bindings=keys, full_screen=True,
                      mouse_support=False)
    app.run()
    return screen.saved
