"""Fault tests of issue 20, items 6 and 10: file names derived from ids are injective and bounded;
text from data reaches matplotlib and the terminal as text.
"""
from __future__ import annotations

import base64
import re
from types import SimpleNamespace

import numpy as np
import pytest

import pipeline.explain as explain_mod
from pipeline.explain import PostExplanation, explain_data, file_stem
from tests.test_faults import pipe
from tests.test_faults_integrity import hisave_run  # noqa: F401 (a fixture)

IDS = ["a/b", "a b", "a?b", "a_b", "été", "日本", "x" * 300, "../../etc/passwd", ".hidden", "-"]


def test_file_names_from_ids_are_injective_readable_and_short():
    stems = [file_stem(i) for i in IDS]
    assert len(set(stems)) == len(IDS)
    for s in stems:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", s) and len(f"{s}-modalities.png".encode()) < 100
    assert file_stem("p0001").startswith("p0001-") and file_stem("a/b").startswith("a_b-")


def test_explain_writes_each_posts_own_files_and_links_them(tmp_path, monkeypatch):
    """Ids `a/b`, `a b`, `a?b` once wrote one `a_b-*` file set: every section showed the last post's
    maps; a 300-character id was an `OSError: File name too long` traceback."""
    def built(run, head, data, unseen, cache):
        return [(PostExplanation(p, "u", 1.0, None, 0, {}), {}, {"words": f"png of {p}".encode()}) for p in IDS]

    monkeypatch.setattr(explain_mod, "explanations", built)
    done = explain_data(SimpleNamespace(name="r"), None, None, None, tmp_path, None, html=True)
    assert len({e.files["words"] for e in done}) == len({e.files["json"] for e in done}) == len(IDS)
    for e in done:
        assert (tmp_path / e.files["words"]).read_bytes() == f"png of {e.post_id}".encode()
    page = (tmp_path / "explain.html").read_text()
    sections = page.split("<section>")[1:]
    assert len(sections) == len(IDS)
    for e, sec in zip(done, sections):
        assert base64.b64encode(f"png of {e.post_id}".encode()).decode() in sec  # its own map
        assert f'href="{e.files["json"]}"' in sec and f'href="{e.files["words"]}"' in sec  # its own files


# -- text drawn as text (item 10) -------------------------------------------------------
MATH = ["$\\undefinedmacro$", "cost $5 or $6", "a\\$b$c$", "50% \\alpha"]


def test_labels_from_data_never_reach_matplotlib_as_math_text():
    """An embedding label `$\\undefinedmacro$` crashed `pipe report`; `cost $5 or $6` was typeset."""
    from matplotlib import cbook
    from matplotlib.text import Text

    from pipeline.evaluate import plots

    for s in MATH:
        assert not cbook.is_math_text(plots.plain(s))
        assert Text(text=plots.plain(s))._preprocess_math(plots.plain(s)) == (s, False)  # drawn exactly as typed
    assert plots.bars(MATH, [0.1, 0.2, 0.3, 0.4], MATH[0], MATH[1], xlabel=MATH[2]).startswith(b"\x89PNG")
    assert plots.bars(MATH * 4, [0.1] * 16, "many", "AP").startswith(b"\x89PNG")
    assert plots.curves({m: ([1, 2], [0.1, 0.2]) for m in MATH}, MATH[0], MATH[1], MATH[0])
    assert plots.words([(m, 0.25) for m in MATH], MATH[0])
    assert plots.thumbnails([(None, m, 0.5) for m in MATH], MATH[0])
    assert plots.heatmap_on_image(None, [0.5, 0.5], (1, 2), MATH[0])
    assert plots.scatter(np.arange(3.0), np.arange(3.0), MATH[0])


ESC = "\x1b]0;pwned\x07\x1b[2J"  # retitles the window, clears the screen


def test_control_characters_from_data_are_shown_not_obeyed():
    import io

    from pipeline.core.terminal import SafeConsole, visible

    assert visible(f"a{ESC}b\tc\n") == "a\\x1b]0;pwned\\x07\\x1b[2Jb\tc\n"
    buf = io.StringIO()
    SafeConsole(file=buf, force_terminal=True, highlight=False).print(f"[bold]id[/] {ESC}", markup=True)
    assert "\x1b[1m" in buf.getvalue() and "\x1b]" not in buf.getvalue() and "\x1b[2J" not in buf.getvalue()


@pytest.mark.slow
def test_ids_and_user_with_escape_sequences_reach_stdout_visible(hisave_run, tmp_path):
    """Terminal escape sequences in a post id or `--user` reached stdout raw."""
    cache, runs, _ = hisave_run
    cands = tmp_path / "c.csv"
    cands.write_text(f"post_id,title\n{ESC}x,a title\nplain,another\n")
    r = pipe("rank", "--run", runs / "u", "--user", f"u{ESC}", "--candidates", cands, "--cache", cache, "--runs", runs)
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\\x1b]0;pwned" in r.output and "\\x1b[2Jx" in r.output
