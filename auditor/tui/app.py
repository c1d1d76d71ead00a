"""The auditor's terminal UI: runs -> variants -> categories / items / decision -> item, and compare.

Screens sit on a stack above the runs list: the variants table of the open run,
then at most one view (categories, items, decision, compare, item) on top of it, so `v`,
`g`, `i` and `d` jump between views and escape goes back. The run is read in a
worker thread through `auditor.view.run.RunView`; the app computes nothing.
"""
from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual import work
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from auditor.core.errors import AuditorError
from auditor.tui.screens.categories import CategoriesScreen
from auditor.tui.screens.compare import CompareScreen
from auditor.tui.screens.decision import DecisionScreen
from auditor.tui.screens.help import HelpScreen
from auditor.tui.screens.item import ItemScreen
from auditor.tui.screens.items import ItemsScreen
from auditor.tui.screens.runs import RunsScreen
from auditor.tui.screens.variants import VariantsScreen
from auditor.view.items import compare_variants, item_detail
from auditor.view.run import RunView

VIEWS = {"categories": CategoriesScreen, "items": ItemsScreen, "decision": DecisionScreen}


class AuditorApp(App[None]):
    """Browse run directories under `reports_dir`; open `run` straight away when given."""

    TITLE = "compression-risk auditor"
    CSS = """
    .title { padding: 0 1; background: $boost; text-style: bold; }
    #reasons { height: auto; padding: 0 1; background: $boost; }
    DataTable { height: auto; max-height: 100%; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("r", "runs", "Runs"),
        Binding("v", "show('variants')", "Variants"),
        Binding("g", "show('categories')", "Categories"),
        Binding("i", "show('items')", "Items"),
        Binding("d", "show('decision')", "Decision"),
        Binding("c", "compare_marked", "Compare"),
        Binding("escape", "back", "Back", show=False),
    ]

    def __init__(self, reports_dir: Path, run: Path | None = None, constraints: dict | None = None) -> None:
        super().__init__()
        self.reports_dir = Path(reports_dir)
        self.initial_run = run
        # Decision constraints given on the command line ({Constraints field: value}); they override the
        # study's [decision] key by key on every run opened, as `auditor decide`'s flags do.
        self.constraints = dict(constraints or {})
        self.view: RunView | None = None
        self.marked: list[tuple[str, str]] = []  # (variant, backend) chosen for compare, two at most
        self.loading: Path | None = None

    def on_mount(self) -> None:
        self.runs_screen = RunsScreen(self.reports_dir)
        self.push_screen(self.runs_screen)
        if self.initial_run is not None:
            self.open_run(self.initial_run)

    # --- loading -----------------------------------------------------------------------------------

    def open_run(self, path: Path) -> None:
        self.loading = path
        self.notify(escape(f"loading {path.name} ..."), timeout=2)
        self.load_run(path)

    @work(thread=True, exclusive=True, group="load")
    def load_run(self, path: Path) -> None:
        try:
            view = RunView.load(path)
        except AuditorError as exc:
            self.call_from_thread(self.notify, escape(str(exc)), severity="error", timeout=10)
            return
        except Exception as exc:  # a damaged file the readers did not foresee: say so, keep the app open
            self.call_from_thread(self.notify, escape(f"{path}: cannot open this run ({type(exc).__name__}: {exc})"),
                                  severity="error", timeout=10)
            return
        self.call_from_thread(self._loaded, view)

    async def _loaded(self, view: RunView) -> None:
        self.view, self.marked, self.loading = view, [], None
        self.sub_title = f"{view.name} - {view.reference_precision}"
        await self._pop_to(self.runs_screen)
        await self.push_screen(VariantsScreen(view))

    # --- navigation --------------------------------------------------------------------------------

    async def _pop_to(self, screen: Screen) -> None:
        while self.screen is not screen and len(self.screen_stack) > 2:
            await self.pop_screen()

    def _variants_screen(self) -> Screen | None:
        return next((s for s in self.screen_stack if isinstance(s, VariantsScreen)), None)

    async def _show_over_variants(self, screen: Screen) -> None:
        base = self._variants_screen()
        if base is not None:
            await self._pop_to(base)
        await self.push_screen(screen)

    async def action_show(self, name: str) -> None:
        if self.view is None:
            self.notify("open a run first (enter on the runs list)", severity="warning")
            return
        base = self._variants_screen()
        if name == "variants":
            if base is not None:
                await self._pop_to(base)
            else:
                await self.push_screen(VariantsScreen(self.view))
            return
        screen = (DecisionScreen(self.view, self.constraints) if name == "decision" else VIEWS[name](self.view))
        await self._show_over_variants(screen)

    async def action_runs(self) -> None:
        await self._pop_to(self.runs_screen)

    async def action_back(self) -> None:
        if len(self.screen_stack) > 2:
            await self.pop_screen()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def open_item(self, item_id: str) -> None:
        if self.view is not None:
            self.push_screen(ItemScreen(item_detail(self.view, item_id)))

    def compare(self, a: tuple[str, str], b: tuple[str, str]) -> None:
        if self.view is not None:
            self.push_screen(CompareScreen(compare_variants(self.view, a, b)))

    def action_compare_marked(self) -> None:
        if len(self.marked) != 2:
            self.notify("mark two variants with space in the variants table (v), then press c", severity="warning")
            return
        self.compare(*self.marked)
