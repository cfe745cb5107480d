"""Records: the locations, contacts and invoices Snapshots keeps.

- `ordering`: which write wins (the ordering key, its ranks, per-field stamps).
- `kinds`: one spec per record kind; `models`: their public shapes.
- `lookup`: finding records; `values`: what a write sets, JSON fields merged by path.
- `apply`: applying events (whole-record upserts, `set_fields`, tags).
- `timeline`: a contact's activities. `edits`: API writes. `reads`: one record or a page.
"""
