"""Issue 12, "what users of such tools expect": the full FITS header of every HDU,
legends and units, a display-only smoothing control, and the training wizard's ETA,
source-dependent fields and a really quick tiny preset; through real widgets."""
from __future__ import annotations

import threading

from PySide6.QtCore import Qt


def test_fits_header_tab_lists_every_hdu_with_all_cards(qtbot, window, open_file, mrs_files,
                                                        monkeypatch):
    from astropy.io import fits

    from spemr_gui import engine_calls

    gui_thread = threading.get_ident()
    threads = []
    real = engine_calls.read_headers

    def spy(path):
        threads.append(threading.get_ident())
        return real(path)

    monkeypatch.setattr(engine_calls, "read_headers", spy)
    view = window.fits_header_view
    with qtbot.waitSignal(view.headers_loaded, timeout=20000):
        opened = open_file(mrs_files[0])
    assert threads and gui_thread not in threads   # read in a worker
    with fits.open(opened.path) as hdul:
        expected = [(hdu.header.get("EXTNAME", ""), len(hdu.header)) for hdu in hdul]
        assert view.hdu_list.count() == len(hdul)
        view.hdu_list.setCurrentRow(1)
        text = view.text.toPlainText()
        lines = text.splitlines()
        assert lines[-1] == "END" and len(lines) == expected[1][1] + 1
        assert lines[0].startswith("XTENSION= 'BINTABLE'")
        assert expected[1][0] in view.hdu_list.item(1).text()
        # every card of the chosen HDU, not a selection of metadata
        for card in hdul[1].header.cards:
            assert str(card) in text
    assert view.text.isReadOnly()
    assert view.text.textInteractionFlags() & Qt.TextSelectableByMouse
    view.find_edit.setText("TTYPE1")
    assert view.find_next(from_start=True)
    assert view.text.textCursor().selectedText() == "TTYPE1"
    view.find_edit.setText("NO-SUCH-KEYWORD-HERE")
    assert not view.find_next(from_start=True)
