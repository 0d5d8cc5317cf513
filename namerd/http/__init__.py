"""namerd's HTTP surface: the control API (``io.l5d.httpController``), watch streams and admin."""
